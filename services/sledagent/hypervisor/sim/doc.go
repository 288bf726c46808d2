// Package sim is the simulated hypervisor: the product's stand-in for
// Propolis, so that VMMs "run" on any Linux machine (SPEC V6, V7).
//
// Each VMM follows the states of V6. A request (run, stop, reboot, migrate
// in) appends the states the VMM must pass through to its pending path; each
// step along the path is a transition. In AUTO mode a transition completes
// after a configurable delay; in EXPLICIT mode only when a test steps it, one
// transition per VMM or every pending one (drain), so races can be staged
// exactly. Every completed transition is reported to the observer (the VMM
// manager), one at a time and in order.
//
// Faults: a VMM that never finishes stopping (unresponsive Propolis), and
// requests that fail with a chosen gRPC code.
package sim
