// Package logging builds the zap loggers both services use, from the level
// and format settings in their configs, and logs their gRPC calls, so every
// process logs alike.
package logging
