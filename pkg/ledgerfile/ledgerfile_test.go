package ledgerfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
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

func TestZ3_CommitWritesEveryCopyAndHighestGenerationWins(t *testing.T) {
	l, paths := twoCopies(t)
	if _, err := l.Commit(3, []byte("three")); err != nil {
		t.Fatal(err)
	}
	// Copy 0 alone moves ahead, as if copy 1's disk failed during a commit.
	data := encode(4, []byte("four"))
	if err := os.WriteFile(paths[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Generation != 4 || string(got.Payload) != "four" {
		t.Fatalf("loaded generation %d %q, want 4 \"four\"", got.Generation, got.Payload)
	}
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
	// Make copy 1 unwritable by putting a directory where its temp files go.
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
	if len(res.Written) != 1 || len(res.Failed) != 1 {
		t.Fatalf("result %+v, want one written and one failed", res)
	}
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
