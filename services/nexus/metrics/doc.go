// Package metrics is nexus's Prometheus instrumentation (SPEC N11): one
// registry per nexus replica holding the REST, gRPC and saga metrics and the
// Go and process collectors, served on the replica's metrics listener.
package metrics
