package ledgerfile

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// copyFile writes one copy's file. Only the copy's writer uses it, and a
// copy has one writer at a time, so it needs no lock.
type copyFile struct {
	path string
	// tmp is the base name of the copy's temporary file. It is this
	// Ledger's own, so that two Ledgers over one directory (a test's
	// helper beside the agent's) never write into each other's.
	tmp string
	// spare is true when tmp names the file that held the copy until this
	// Ledger's last write replaced it, and that write is durable: nothing
	// durable refers to that file any more, so the next write may fill it
	// in place rather than create a file, whose fsync must commit the
	// filesystem's journal, and free the old one, which slows the rename.
	spare bool
	// noExchange is set once the filesystem has refused to swap names.
	noExchange bool
	// dirSyncErrForTest, when set, is what the directory's fsync returns
	// instead of syncing, to play a disk that fails it.
	dirSyncErrForTest error
	// traceForTest, when set, hears each step that orders the write on
	// disk, once it succeeded.
	traceForTest func(step string)
}

func (c *copyFile) trace(step string) {
	if c.traceForTest != nil {
		c.traceForTest(step)
	}
}

func newCopyFile(path string) *copyFile {
	return &copyFile{path: path, tmp: fmt.Sprintf("%s.tmp-%08x", filepath.Base(path), rand.Uint32())}
}

func removeStaleTemps(path string) {
	matches, _ := filepath.Glob(path + ".tmp-*")
	for _, m := range matches {
		os.Remove(m)
	}
}
