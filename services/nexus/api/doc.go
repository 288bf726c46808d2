// Package api holds nexus's gRPC handlers. Each translates the request,
// calls the app layer, and maps errors through the one table in errors.go.
package api
