// Package sledagenttest starts real sled-agents for tests: in process, on a
// loopback port, with their ledgers and zone runtime in temporary
// directories, reached through real gRPC clients. An agent can be restarted
// over the same directories, the way a sled-agent process restarts on a sled.
package sledagenttest
