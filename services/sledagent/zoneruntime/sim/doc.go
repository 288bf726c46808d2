// Package sim is the simulated zone runtime: the product's stand-in for
// illumos zones, so that a sled-agent runs on any Linux machine.
//
// Zones are records in a state directory, one file per zone, so they outlive
// a sled-agent process the way real zones do (SPEC Z8). The files are not
// fsynced: they model the operating system's view of zones, which survives
// the agent's kill -9 through the page cache, not a power loss.
//
// Faults (SPEC V7, zone part) are switched on through the SledAgentSim API:
// fail the next N starts or shutdown steps of a zone, delay every operation,
// or hang a zone's halt until it is released.
package sim
