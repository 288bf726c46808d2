// Package nexusclient is how a sled-agent talks to nexus's internal API:
// it registers the sled and heartbeats (SPEC V8), and publishes VMM state
// changes, retrying with backoff while nexus does not take them (V5).
//
// Publication keeps at most one undelivered update per VMM: nexus applies
// an update only if its generation is newer than the one it stored (N3), so
// a newer update replaces a waiting one, keeping the newest runtime and the
// newest report of each migration side. Nexus therefore hears the latest
// of each VMM, in generation order, and may miss intermediate states while
// it is slow or unreachable. VMMs take turns; each backs off on its own, so
// a VMM whose updates nexus keeps refusing does not hold back the others.
//
// Errors nexus answers with a client-side code (INVALID_ARGUMENT,
// NOT_FOUND for a VMM it does not know, PERMISSION_DENIED for one placed
// on another sled, FAILED_PRECONDITION …, the 4xx of gRPC) are permanent:
// the update is logged at warn and dropped, since sending it again cannot
// succeed; a newer update of the same VMM is still sent. Everything else
// (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL,
// transport failures) is retried forever, 250 ms growing to a 3 minute cap,
// jittered.
package nexusclient
