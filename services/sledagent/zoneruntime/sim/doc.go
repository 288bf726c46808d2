// Package sim is the simulated zone runtime: the product's stand-in for
// illumos zones, so that a sled-agent runs on any Linux machine.
//
// Zones live in a journal in a state directory (one JSON line per zone state
// change, compacted on open), so they outlive a sled-agent process the way
// real zones do (SPEC Z8). The journal is not fsynced: it models the
// operating system's view of zones, which survives the agent's kill -9
// through the page cache, not a power loss.
//
// Faults (SPEC V7, zone part) are switched on through the SledAgentSim API:
// fail the next N starts or shutdown steps of a zone, delay every operation,
// or hang a zone's halt until it is released.
package sim
