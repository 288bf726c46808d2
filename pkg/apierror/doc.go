// Package apierror is the one vocabulary both services use for errors that
// cross an API boundary: field violations collected during validation, and
// gRPC statuses that carry a machine-readable reason (google.rpc.ErrorInfo)
// or per-field problems (google.rpc.BadRequest).
//
// Domain code returns *ValidationError or its own sentinel errors; only the
// API layer of each service turns them into statuses, with the helpers here.
// Clients read them back with Reason and FieldViolations.
package apierror
