// Package ledgerfile stores a generation-numbered blob durably in several
// copies, one per directory (one per M.2 disk on a real sled), the way
// omicron's ledgers do.
//
// Each copy is one file: a header line
//
//	rackplane-ledger v1 generation=<g> length=<n> sha256=<hex>
//
// followed by exactly n payload bytes. The checksum covers the generation,
// the length and the payload, so a torn write, a truncated file or a flipped
// bit anywhere makes the copy invalid rather than wrong.
//
// A commit writes each copy as temp file, fsync, rename, fsync of the
// directory, and succeeds once at least one copy is durable: one hung disk
// must not stop the sled taking configs while another disk works. The file
// a copy's name points to is never written to. On Linux the rename is an
// exchange, and the file it swaps out becomes the copy's next temporary
// file, filled in place once the exchange is durable: a new file's fsync
// would commit the filesystem's journal, and freeing the old file would
// slow the rename. Each copy has its own writer, so a copy whose write is
// in flight is never written again concurrently, commits reach every copy
// in the order they were made (newer ones waiting behind a slow write
// replace each other, never the one in flight), and no copy ever goes back
// to an older generation. Copies reports each copy's state, a slow or
// failing one included.
//
// A load reads every copy, ignores (and reports) invalid ones, and returns
// the highest valid generation. A caller's content check makes a copy whose
// checksum is right but whose payload it refuses invalid too. Generation
// rules (what may replace what) belong to the caller; this package only
// keeps the newest valid bytes.
package ledgerfile
