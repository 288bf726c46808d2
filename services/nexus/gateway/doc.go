// Package gateway is nexus's external REST API: grpc-gateway in front of
// the NexusExternal gRPC service, speaking Oxide API v1 conventions (SPEC
// N9) so that Oxide's own Go SDK works against it.
//
// The gateway calls NexusExternal through an in-process channel
// (pkg/inprocgrpc) that runs the external gRPC server's interceptor chain,
// so every interceptor (request ids, auth, metrics) covers REST exactly as
// it covers gRPC, without a loopback HTTP/2 hop per request.
//
//   - JSON: snake_case field names, 64-bit integers as JSON numbers, enums
//     as lowercase strings (the proto carries them as strings), RFC 3339
//     timestamps; unknown fields from newer clients are ignored.
//   - Errors: {"request_id", "error_code", "message"} with Oxide's codes,
//     mapped from gRPC codes in one table (errors.go).
//   - Every response carries x-request-id, the id nexus logs the request
//     under and puts in error bodies (N11).
//   - GET /openapi.json serves an OpenAPI 3 document of the API as the wire
//     has it (openapi3gen writes it; tools/generate.sh runs it).
package gateway
