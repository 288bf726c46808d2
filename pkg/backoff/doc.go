// Package backoff computes retry delays: exponential growth from an initial
// delay to a cap, with random jitter so that many retriers do not move in
// step. Both services use it (the sled-agent's reconciler retries, and later
// publication to nexus and nexus's calls to sleds).
package backoff
