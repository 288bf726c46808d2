package ledgerfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/testutil"
)

// Once a copy exists, a commit fills the file the previous commit swapped
// out rather than create one: a new file's fsync costs a journal commit,
// and freeing the file it replaces costs the rename.
func TestZ3_ACommitFillsTheFileThePreviousOneSwappedOut(t *testing.T) {
	l, paths := twoCopies(t)
	for gen := uint64(1); gen <= 6; gen++ {
		var spares []*os.File
		if gen > 2 {
			for i, p := range paths {
				f, err := os.Open(filepath.Join(filepath.Dir(p), l.files[i].tmp))
				if err != nil {
					t.Fatalf("before commit %d: %v", gen, err)
				}
				defer f.Close()
				spares = append(spares, f)
			}
		}
		if _, err := l.Commit(gen, []byte(fmt.Sprint(gen))); err != nil {
			t.Fatal(err)
		}
		for i, spare := range spares {
			was, err := spare.Stat()
			if err != nil {
				t.Fatal(err)
			}
			now, err := os.Stat(paths[i])
			if err != nil {
				t.Fatal(err)
			}
			if !os.SameFile(was, now) {
				t.Fatalf("commit %d put a new file in copy %d, not the spare", gen, i)
			}
		}
	}
}

// A write whose directory fsync failed may not have swapped the files on
// disk: the file it swapped out may still be the copy after a crash, so
// the next write does not fill it in place.
func TestZ3_AfterAFailedDirectoryFsyncTheSwappedOutFileIsLeftAlone(t *testing.T) {
	l, paths := twoCopies(t)
	for gen := uint64(1); gen <= 2; gen++ {
		if _, err := l.Commit(gen, []byte(fmt.Sprint(gen))); err != nil {
			t.Fatal(err)
		}
	}
	l.files[0].dirSyncErrForTest = syscall.EIO
	res, err := l.Commit(3, []byte("3"))
	if err != nil || !slices.Equal(res.Written, paths[1:]) {
		t.Fatalf("Commit: %+v, %v; want copy 1 written and copy 0 failed", res, err)
	}
	l.files[0].dirSyncErrForTest = nil
	swappedOut, err := os.Open(filepath.Join(filepath.Dir(paths[0]), l.files[0].tmp))
	if err != nil {
		t.Fatal(err)
	}
	defer swappedOut.Close()
	if _, err := l.Commit(4, []byte("4")); err != nil {
		t.Fatal(err)
	}
	if gen, _, err := readCopy(paths[0]); err != nil || gen != 4 {
		t.Fatalf("copy 0 holds generation %d (%v), want 4", gen, err)
	}
	got, err := io.ReadAll(swappedOut)
	if err != nil {
		t.Fatal(err)
	}
	if want := encode(2, []byte("2")); string(got) != string(want) {
		t.Fatalf("the file swapped out by the failed write holds %q, want generation 2 untouched", got)
	}
}

// A spare that is no longer a file of its own (here a link to the copy) is
// not written in place: the commit writes a new file and the copy's old
// content stays intact until the rename.
func TestZ3_ASpareLinkedToTheCopyIsNotWrittenInPlace(t *testing.T) {
	l, paths := twoCopies(t)
	for gen := uint64(1); gen <= 2; gen++ {
		if _, err := l.Commit(gen, []byte(fmt.Sprint(gen))); err != nil {
			t.Fatal(err)
		}
	}
	spare := filepath.Join(filepath.Dir(paths[0]), l.files[0].tmp)
	if err := os.Remove(spare); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(paths[0], spare); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Commit(3, []byte("3")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(spare); err != nil || string(got) != string(old) {
		t.Fatalf("the file linked as spare holds %q (%v), want the old copy %q untouched", got, err, old)
	}
	if gen, _, err := readCopy(paths[0]); err != nil || gen != 3 {
		t.Fatalf("copy 0 holds generation %d (%v), want 3", gen, err)
	}
}

// A copy whose temporary file cannot be written fails on its own while the
// other carries the commit, and the first commit once it can be written
// again rewrites it.
func TestZ3_ACopyWhoseTemporaryFileCannotBeWrittenFailsAndRecovers(t *testing.T) {
	l, paths := twoCopies(t)
	for gen := uint64(1); gen <= 2; gen++ {
		if _, err := l.Commit(gen, []byte(fmt.Sprint(gen))); err != nil {
			t.Fatal(err)
		}
	}
	blocker := filepath.Join(filepath.Dir(paths[1]), l.files[1].tmp)
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(blocker, "full"), 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := l.Commit(3, []byte("3"))
	if err != nil || !slices.Equal(res.Written, paths[:1]) || res.Failed[paths[1]] == nil {
		t.Fatalf("Commit: %+v, %v; want copy 0 written and copy 1 failed", res, err)
	}
	if gen, _, err := readCopy(paths[1]); err != nil || gen != 2 {
		t.Fatalf("the failed copy holds generation %d (%v), want 2 as before", gen, err)
	}
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Commit(4, []byte("4")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := l.Copies()[1]; st.Err != nil || st.Generation != 4 {
			return fmt.Errorf("copy 1's status is %+v, want generation 4", st)
		}
		return nil
	})
	if gen, payload, err := readCopy(paths[1]); err != nil || gen != 4 || string(payload) != "4" {
		t.Fatalf("copy 1 holds generation %d %q (%v), want 4", gen, payload, err)
	}
}
