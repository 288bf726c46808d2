// Package api holds the sled-agent's gRPC handlers. Each handler translates
// the request, calls the app layer (or the sim backends for SledAgentSim),
// and translates errors through the one table in errors.go.
package api
