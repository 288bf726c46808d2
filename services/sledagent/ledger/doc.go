// Package ledger keeps the sled's zones config: the last config nexus sent
// that the sled accepted, durable in every ledger directory (SPEC Z1, Z3).
//
// It owns the generation rules: the first config is accepted whatever its
// generation, an older generation is refused, the same generation with other
// content is refused, and the same config again is accepted and rewritten.
// Accepted configs are handed to the reconciler in generation order, after
// they are durable and never before.
package ledger
