// Package nexusclient is how a sled-agent talks to nexus's internal API:
// it registers the sled and heartbeats (SPEC V8), and publishes VMM state
// changes in order, retrying with backoff while nexus is unreachable (V5).
//
// Errors nexus answers with a client-side code (INVALID_ARGUMENT,
// NOT_FOUND, FAILED_PRECONDITION …, the 4xx of gRPC) are permanent: the
// update is logged and dropped, since sending it again cannot succeed.
// Everything else (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, transport
// failures) is retried forever, 250 ms growing to a 3 minute cap, jittered.
package nexusclient
