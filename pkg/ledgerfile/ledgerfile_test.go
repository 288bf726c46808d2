package ledgerfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/testutil"
)

func twoCopies(t *testing.T) (*Ledger, []string) {
	t.Helper()
	root := t.TempDir()
	dirs := []string{filepath.Join(root, "m2-0"), filepath.Join(root, "m2-1")}
	l, err := New(dirs, "zones.ledger")
	if err != nil {
		t.Fatal(err)
	}
	return l, l.Paths()
}

func TestZ3_EmptyLedgerLoadsAsNotFound(t *testing.T) {
	l, _ := twoCopies(t)
	got, err := l.Load()
	if err != nil || got.Found {
		t.Fatalf("Load() = %+v, %v; want not found, no error", got, err)
	}
}

func TestZ3_CommitWritesEveryCopy(t *testing.T) {
	l, paths := twoCopies(t)
	if _, err := l.Commit(3, []byte("three")); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if gen, payload, err := readCopy(p); err != nil || gen != 3 || string(payload) != "three" {
			t.Fatalf("%s holds generation %d %q (%v), want 3 \"three\"", p, gen, payload, err)
		}
	}
}

// Whichever copy is ahead, as if the other's disk failed during a commit:
// a Load that took the first or the last valid copy would pass with the
// newer one in only one of the places.
func TestZ3_HighestGenerationWinsWhicheverCopyHoldsIt(t *testing.T) {
	for newer := range 2 {
		t.Run(fmt.Sprintf("newer in copy %d", newer), func(t *testing.T) {
			l, paths := twoCopies(t)
			if _, err := l.Commit(3, []byte("three")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(paths[newer], encode(4, []byte("four")), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := l.Load()
			if err != nil {
				t.Fatal(err)
			}
			if got.Generation != 4 || string(got.Payload) != "four" {
				t.Fatalf("loaded generation %d %q, want 4 \"four\"", got.Generation, got.Payload)
			}
			if older := got.Copies[1-newer]; older.Err != nil || older.Generation != 3 {
				t.Fatalf("the older copy's status is %+v, want valid at generation 3", older)
			}
		})
	}
}

// A copy whose checksum is right but whose payload the caller refuses is
// invalid, wherever it is and however new: the other copy wins.
func TestZ3_ACopyWithAValidChecksumButInvalidContentIsInvalid(t *testing.T) {
	check := func(_ uint64, payload []byte) error {
		if string(payload) != "good" {
			return errors.New("not good")
		}
		return nil
	}
	for bad := range 2 {
		t.Run(fmt.Sprintf("bad copy %d", bad), func(t *testing.T) {
			l, paths := twoCopies(t)
			if _, err := l.Commit(3, []byte("good")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(paths[bad], encode(4, []byte("bad")), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := l.LoadChecked(check)
			if err != nil {
				t.Fatal(err)
			}
			if got.Generation != 3 || string(got.Payload) != "good" {
				t.Fatalf("loaded generation %d %q, want 3 \"good\"", got.Generation, got.Payload)
			}
			if st := l.Copies()[bad]; !errors.Is(st.Err, ErrInvalidContent) || !strings.Contains(st.Err.Error(), "not good") {
				t.Fatalf("the bad copy's status is %+v, want it invalid for its content", st)
			}
			// The next commit rewrites it.
			if _, err := l.Commit(4, []byte("good")); err != nil {
				t.Fatal(err)
			}
			if st := l.Copies()[bad]; st.Err != nil || st.Generation != 4 {
				t.Fatalf("after a commit the bad copy's status is %+v, want generation 4", st)
			}
			if got, err := l.LoadChecked(check); err != nil || got.Generation != 4 || got.Copies[bad].Err != nil {
				t.Fatalf("after a commit: %+v, %v; want every copy valid at generation 4", got, err)
			}
		})
	}
	t.Run("every copy", func(t *testing.T) {
		l, paths := twoCopies(t)
		for _, p := range paths {
			if err := os.WriteFile(p, encode(4, []byte("bad")), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := l.LoadChecked(check); !errors.Is(err, ErrNoValidCopy) || !strings.Contains(err.Error(), "not good") {
			t.Fatalf("LoadChecked: %v, want ErrNoValidCopy naming the problem", err)
		}
	})
}

func TestZ3_CorruptOrTruncatedCopyIsIgnored(t *testing.T) {
	l, paths := twoCopies(t)
	if _, err := l.Commit(7, []byte(`{"zones":[]}`)); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(paths[0])
	for name, bad := range map[string][]byte{
		"truncated": good[:len(good)-3],
		"bit flip":  flip(good, len(good)-2),
		"empty":     {},
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(paths[1], bad, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := l.Load()
			if err != nil {
				t.Fatal(err)
			}
			if got.Generation != 7 || got.Copies[1].Err == nil {
				t.Fatalf("got generation %d, copy status %+v; want 7 from the good copy and the bad one reported", got.Generation, got.Copies[1])
			}
		})
	}
}

func TestZ3_EveryByteFlipAndTruncationIsDetected(t *testing.T) {
	data := encode(12, []byte(`{"generation":12,"zones":[{"id":"x"}]}`))
	path := filepath.Join(t.TempDir(), "l")
	for i := range data {
		if err := os.WriteFile(path, flip(data, i), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := readCopy(path); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	for n := 0; n < len(data); n++ {
		if err := os.WriteFile(path, data[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := readCopy(path); err == nil {
			t.Fatalf("truncation to %d bytes went unnoticed", n)
		}
	}
}

func TestZ3_AllCopiesCorruptIsAnErrorNotAnEmptyLedger(t *testing.T) {
	l, paths := twoCopies(t)
	for _, p := range paths {
		if err := os.WriteFile(p, []byte("garbage"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := l.Load()
	if !errors.Is(err, ErrNoValidCopy) {
		t.Fatalf("Load() error = %v, want ErrNoValidCopy", err)
	}
}

func TestZ3_CommitSucceedsWhileOneCopyIsDurable(t *testing.T) {
	l, paths := twoCopies(t)
	// Make copy 1 unwritable by putting a file where its directory was.
	if err := os.RemoveAll(filepath.Dir(paths[1])); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Dir(paths[1]), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := l.Commit(1, []byte("x"))
	if err != nil {
		t.Fatalf("Commit with one good copy failed: %v", err)
	}
	if len(res.Written) != 1 || res.Written[0] != paths[0] || res.Failed[paths[0]] != nil {
		t.Fatalf("result %+v, want copy 0 written", res)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := l.Copies()[1]; st.Err == nil {
			return fmt.Errorf("copy 1's status is %+v, want its failure", st)
		}
		return nil
	})
}

func TestZ3_StaleTempFilesAreRemovedOnLoad(t *testing.T) {
	l, paths := twoCopies(t)
	stale := paths[0] + ".tmp-123"
	if err := os.WriteFile(stale, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Load(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp file still there: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	out := append([]byte(nil), b...)
	out[i] ^= 0x20
	return out
}
