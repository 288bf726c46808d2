package ledgerfile

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

const formatTag = "rackplane-ledger v1"

// ErrNoValidCopy is returned by Load when copies exist but none is valid. A
// caller must not carry on as if the ledger were empty.
var ErrNoValidCopy = errors.New("ledger copies exist but none is valid")

// Ledger is a set of copies of one ledgered blob.
type Ledger struct {
	name  string
	paths []string
}

// New returns the ledger named name kept in each of dirs, creating the
// directories if needed.
func New(dirs []string, name string) (*Ledger, error) {
	if len(dirs) == 0 {
		return nil, errors.New("ledger needs at least one directory")
	}
	if name == "" || strings.ContainsRune(name, os.PathSeparator) {
		return nil, fmt.Errorf("invalid ledger name %q", name)
	}
	l := &Ledger{name: name}
	seen := map[string]bool{}
	for _, dir := range dirs {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		if seen[abs] {
			return nil, fmt.Errorf("ledger directory %s is listed twice", dir)
		}
		seen[abs] = true
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return nil, fmt.Errorf("creating ledger directory: %w", err)
		}
		l.paths = append(l.paths, filepath.Join(abs, name))
	}
	return l, nil
}

// Paths returns the path of every copy.
func (l *Ledger) Paths() []string { return append([]string(nil), l.paths...) }

// CopyStatus describes one copy as Load found it.
type CopyStatus struct {
	Path       string
	Missing    bool
	Generation uint64 // valid only when Err is nil and !Missing
	Err        error  // why the copy is invalid
}

// Loaded is the result of reading every copy.
type Loaded struct {
	// Found is false when no copy exists at all (a new sled).
	Found      bool
	Generation uint64
	Payload    []byte
	Copies     []CopyStatus
}

// Load reads every copy and returns the highest valid generation. Stale
// temporary files from interrupted commits are removed. When copies exist but
// none is valid it returns ErrNoValidCopy (wrapped with every copy's problem)
// along with the per-copy statuses.
func (l *Ledger) Load() (Loaded, error) {
	var out Loaded
	anyExists := false
	for _, path := range l.paths {
		removeStaleTemps(path)
		st := CopyStatus{Path: path}
		gen, payload, err := readCopy(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			st.Missing = true
		case err != nil:
			anyExists = true
			st.Err = err
		default:
			anyExists = true
			st.Generation = gen
			if !out.Found || gen > out.Generation {
				out.Found, out.Generation, out.Payload = true, gen, payload
			}
		}
		out.Copies = append(out.Copies, st)
	}
	if anyExists && !out.Found {
		var problems []string
		for _, c := range out.Copies {
			if c.Err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", c.Path, c.Err))
			}
		}
		return out, fmt.Errorf("%w: %s", ErrNoValidCopy, strings.Join(problems, "; "))
	}
	return out, nil
}

// CommitResult says which copies a commit made durable.
type CommitResult struct {
	Written []string
	Failed  map[string]error
}

// Commit durably writes payload as generation to every copy, concurrently.
// It succeeds when at least one copy is durable; failures of the others are
// reported in the result. It fails only when no copy could be written.
func (l *Ledger) Commit(generation uint64, payload []byte) (CommitResult, error) {
	data := encode(generation, payload)
	errs := make([]error, len(l.paths))
	var wg sync.WaitGroup
	for i, path := range l.paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = writeDurably(path, data)
		}()
	}
	wg.Wait()
	res := CommitResult{Failed: map[string]error{}}
	for i, path := range l.paths {
		if errs[i] != nil {
			res.Failed[path] = errs[i]
		} else {
			res.Written = append(res.Written, path)
		}
	}
	if len(res.Written) == 0 {
		return res, fmt.Errorf("no ledger copy could be written: %w", errors.Join(errs...))
	}
	return res, nil
}

func checksum(generation uint64, payload []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s generation=%d length=%d\n", formatTag, generation, len(payload))
	h.Write(payload)
	return hex.EncodeToString(h.Sum(nil))
}

func encode(generation uint64, payload []byte) []byte {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "%s generation=%d length=%d sha256=%s\n",
		formatTag, generation, len(payload), checksum(generation, payload))
	buf.Write(payload)
	return buf.Bytes()
}

func readCopy(path string) (uint64, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	header, err := r.ReadString('\n')
	if err != nil {
		return 0, nil, fmt.Errorf("reading header: torn or empty file: %w", err)
	}
	var (
		gen    uint64
		length int
		sum    string
	)
	if _, err := fmt.Sscanf(header, formatTag+" generation=%d length=%d sha256=%s\n", &gen, &length, &sum); err != nil {
		return 0, nil, fmt.Errorf("malformed header %q: %w", strings.TrimSpace(header), err)
	}
	if length < 0 || length > 1<<30 {
		return 0, nil, fmt.Errorf("implausible payload length %d", length)
	}
	// A header may promise more than the file holds (torn, or forged): the
	// payload is never allocated beyond what is there.
	if info, err := f.Stat(); err != nil {
		return 0, nil, err
	} else if int64(len(header))+int64(length) > info.Size() {
		return 0, nil, fmt.Errorf("payload shorter than the %d bytes the header promises (truncated)", length)
	}
	payload := make([]byte, length)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("payload shorter than the %d bytes the header promises (truncated)", length)
	}
	if extra, _ := r.Peek(1); len(extra) > 0 {
		return 0, nil, errors.New("trailing bytes after the payload")
	}
	if checksum(gen, payload) != sum {
		return 0, nil, errors.New("checksum mismatch (corrupt copy)")
	}
	return gen, payload, nil
}

func writeDurably(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpPath := tmp.Name()
	cleanup := func(err error) error {
		tmp.Close()
		os.Remove(tmpPath)
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return cleanup(err)
	}
	if err := tmp.Sync(); err != nil {
		return cleanup(err)
	}
	if err := tmp.Close(); err != nil {
		return cleanup(err)
	}
	if err := os.Rename(tmpPath, path); err != nil {
		os.Remove(tmpPath)
		return err
	}
	// The rename is durable only once the directory entry is.
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func removeStaleTemps(path string) {
	matches, _ := filepath.Glob(path + ".tmp-*")
	for _, m := range matches {
		os.Remove(m)
	}
}
