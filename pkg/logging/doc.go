// Package logging builds the zap loggers both services use, from the level
// and format settings in their configs, so every process logs alike.
package logging
