// Package reconciler drives the zones that actually run on a sled toward the
// ledgered zones config (SPEC Z4, Z5, Z8).
//
// One goroutine runs passes. A pass is triggered by a newly ledgered config,
// by the retry timer after a pass that left errors (bounded backoff with
// jitter), or by an explicit Poke. A pass never aborts halfway; a config that
// arrives during a pass triggers another one.
//
// In each pass, zones that are unwanted, changed, partially shut down or
// failed to start are shut down first, concurrently, step by step. Each step
// is bounded (Config.ShutdownTimeout): one that outlasts it is a failed
// shutdown, so a hung zone cannot stall every pass. Only if
// every shutdown succeeded are missing zones started, concurrently. A zone
// leaves the reconciler's tracking only when its shutdown has succeeded, so
// the published result never omits a zone that may still be running (Z6).
//
// What the reconciler needs from the sled is the ZoneRuntime interface,
// defined here; the simulated runtime in zoneruntime/sim implements it.
package reconciler
