package ledgerfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/pkg/ledgerfile"
)

// FuzzLedgerFile (S6): any bytes in a ledger copy are read back as a
// valid copy or refused as an invalid one, never a panic or an allocation
// the file does not back; a copy Load accepts holds exactly what was
// committed to it, and LoadChecked refuses it when the check does.
func FuzzLedgerFile(f *testing.F) {
	dir := f.TempDir()
	l, err := ledgerfile.New([]string{dir}, "zones.json")
	if err != nil {
		f.Fatal(err)
	}
	if _, err := l.Commit(7, []byte(`{"generation": 7, "zones": []}`)); err != nil {
		f.Fatal(err)
	}
	valid, err := os.ReadFile(filepath.Join(dir, "zones.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add([]byte("rackplane-ledger v1 generation=1 length=1073741824 sha256=00\n"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "zones.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := ledgerfile.New([]string{dir}, "zones.json")
		if err != nil {
			t.Fatal(err)
		}
		loaded, err := l.Load()
		if err != nil {
			if !errors.Is(err, ledgerfile.ErrNoValidCopy) {
				t.Fatalf("an invalid copy failed otherwise than as invalid: %v", err)
			}
			return
		}
		if !loaded.Found || int64(len(loaded.Payload)) > int64(len(data)) {
			t.Fatalf("accepted %d bytes as %+v", len(data), loaded)
		}
		// A copy the caller's check refuses is invalid like a torn one.
		_, err = l.LoadChecked(func(uint64, []byte) error { return errors.New("refused") })
		if !errors.Is(err, ledgerfile.ErrNoValidCopy) || !strings.Contains(err.Error(), ledgerfile.ErrInvalidContent.Error()) {
			t.Fatalf("a copy the check refused loaded with %v", err)
		}
	})
}

// A copy whose header promises a gigabyte it does not hold is refused as
// truncated without allocating the gigabyte (found while writing
// FuzzLedgerFile: the payload was allocated from the header alone).
func TestZ3_ACopyThatPromisesMoreThanItHoldsIsRefusedWithoutAllocatingIt(t *testing.T) {
	dir := t.TempDir()
	header := []byte("rackplane-ledger v1 generation=1 length=1073741824 sha256=00\n")
	if err := os.WriteFile(filepath.Join(dir, "zones.json"), header, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := ledgerfile.New([]string{dir}, "zones.json")
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = l.Load()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ledgerfile.ErrNoValidCopy) || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("Load: %v; want the copy refused as truncated", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("refusing a %d-byte copy allocated %d bytes", len(header), grew)
	}
}
