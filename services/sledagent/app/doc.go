// Package app is the sled-agent's application layer: what the API handlers
// call. It validates a zones config against this sled's facts, ledgers it,
// and assembles the inventory from the ledger and the reconciler.
package app
