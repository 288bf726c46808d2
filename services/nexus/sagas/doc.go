// Package sagas holds nexus's sagas (SPEC N5-N7), one file per saga:
// parameters, nodes (each with its undo), and their implementations, run by
// the engine in services/nexus/saga.
//
// Every node is idempotent: it may run again after a crash, so each checks
// whether its effect is already there (a VMM row with its id, an instance
// already linked to it) before making it. Every runtime write goes through
// the generation guard (N3).
package sagas
