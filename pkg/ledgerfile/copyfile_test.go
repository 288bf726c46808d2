package ledgerfile

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A crash during a commit must leave each copy as it was or as committed:
// so a commit never writes into the file a copy's name points to, whatever
// the payload sizes (a file filled in place may have been longer) and
// however many commits came before.
func TestZ3_ACommitNeverWritesIntoTheFileACopyNames(t *testing.T) {
	l, paths := twoCopies(t)
	sizes := []int{2000, 10, 5000, 1, 3000, 3000, 4096, 0, 700}
	var before [][]byte
	for i, size := range sizes {
		gen := uint64(i + 1)
		var held []*os.File
		if i > 0 {
			for _, p := range paths {
				f, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				held = append(held, f)
			}
		}
		payload := bytes.Repeat([]byte{byte('a' + i)}, size)
		if _, err := l.Commit(gen, payload); err != nil {
			t.Fatalf("commit %d: %v", gen, err)
		}
		for k, f := range held {
			got, err := io.ReadAll(f)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, before[k]) {
				t.Fatalf("commit %d changed the file copy %d named before it: %d bytes, were %d", gen, k, len(got), len(before[k]))
			}
		}
		before = before[:0]
		for _, p := range paths {
			g, got, err := readCopy(p)
			if err != nil || g != gen || !bytes.Equal(got, payload) {
				t.Fatalf("after commit %d %s holds generation %d, %d bytes (%v)", gen, p, g, len(got), err)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			before = append(before, data)
		}
	}
}

// What a commit leaves beside a copy for the next one is a temporary file,
// which Load removes; commits after that still reach every copy.
func TestZ3_LoadLeavesNothingButTheCopiesAndCommitsGoOn(t *testing.T) {
	l, paths := twoCopies(t)
	for gen := uint64(1); gen <= 3; gen++ {
		if _, err := l.Commit(gen, []byte(fmt.Sprint(gen))); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := l.Load(); err != nil || got.Generation != 3 {
		t.Fatalf("Load: %+v, %v; want generation 3", got, err)
	}
	for _, p := range paths {
		entries, err := os.ReadDir(filepath.Dir(p))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if len(names) != 1 || names[0] != filepath.Base(p) {
			t.Fatalf("after Load %s holds %s, want the copy alone", filepath.Dir(p), strings.Join(names, ", "))
		}
	}
	for gen := uint64(4); gen <= 5; gen++ {
		if _, err := l.Commit(gen, []byte(fmt.Sprint(gen))); err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			if g, payload, err := readCopy(p); err != nil || g != gen || string(payload) != fmt.Sprint(gen) {
				t.Fatalf("after commit %d %s holds generation %d %q (%v)", gen, p, g, payload, err)
			}
		}
	}
}

// Z3's order, on every copy and every commit, the first (no copy yet)
// included: the temporary file's data is durable before the rename, and
// the rename before the commit counts.
func TestZ3_EveryWriteSyncsTheFileThenRenamesThenSyncsTheDirectory(t *testing.T) {
	l, paths := twoCopies(t)
	steps := make([][]string, len(paths))
	for i := range paths {
		l.files[i].traceForTest = func(step string) { steps[i] = append(steps[i], step) }
	}
	want := []string{"write", "fsync file", "rename", "fsync directory"}
	for gen := uint64(1); gen <= 3; gen++ {
		for i := range steps {
			steps[i] = nil
		}
		if res, err := l.Commit(gen, []byte(fmt.Sprint(gen))); err != nil || len(res.Written) != len(paths) {
			t.Fatalf("commit %d: %+v, %v", gen, res, err)
		}
		for i, got := range steps {
			if !slices.Equal(got, want) {
				t.Fatalf("commit %d wrote copy %d by %v, want %v", gen, i, got, want)
			}
		}
	}
}
