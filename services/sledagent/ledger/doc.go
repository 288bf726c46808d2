// Package ledger keeps the sled's zones config: the last config nexus sent
// that the sled accepted, durable in every ledger directory (SPEC Z1, Z3).
//
// It owns the generation rules: the first config is accepted whatever its
// generation, an older generation is refused, the same generation with other
// content is refused, and the same config again is accepted and rewritten.
// Accepted configs are handed to the reconciler in generation order, after
// they are durable and never before.
//
// A copy counts only if its checksum is right and its content is a config
// the agent would accept from nexus for this sled (Z2, Z3): a copy that
// passes its checksum but names an unknown kind, repeats an id or uses
// another sled's pool was written by something else, and is as corrupt as
// a torn one. A commit returns once one copy is durable, so a hung disk
// does not stop the sled; CopyStatus says which copies are slow, failing or
// corrupt.
package ledger
