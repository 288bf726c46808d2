package ledgerfile

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

const formatTag = "rackplane-ledger v1"

// StragglerWait is how long a commit that is already durable on one copy
// still waits for the copies it started writing at the same time. Healthy
// disks finish well within it, so every copy is current when a commit
// returns; a slow or hung disk costs a commit at most this much.
const StragglerWait = 500 * time.Millisecond

// ErrNoValidCopy is returned by Load when copies exist but none is valid. A
// caller must not carry on as if the ledger were empty.
var ErrNoValidCopy = errors.New("ledger copies exist but none is valid")

// ErrInvalidContent marks a copy whose checksum is right but whose payload
// the caller's check refused: it is as unusable as a torn one.
var ErrInvalidContent = errors.New("checksum valid but content invalid")

// ErrGenerationBehind refuses a commit older than one already handed to the
// copies: that one may still land on a copy (its write may be in flight, or
// have failed after its rename), and a copy must never go back to an older
// generation.
var ErrGenerationBehind = errors.New("generation is older than one already committed")

// Ledger is a set of copies of one ledgered blob.
type Ledger struct {
	name         string
	paths        []string
	writeForTest func(path string, generation uint64, write func() error) error
	observe      func(path string, generation uint64, err error)

	files []*copyFile // by index in paths; each used by its copy's writer alone

	mu     sync.Mutex
	copies []copyState // by index in paths
	floor  uint64      // the highest generation handed to the copies
}

// Each copy has at most one write in flight, and at most one waiting: a
// newer commit replaces the waiting one (a copy is rewritten whole, so only
// the newest matters) but never overtakes the one in flight.
type copyState struct {
	status  CopyStatus
	writing *job
	queued  *job
}

type job struct {
	generation uint64
	data       []byte
	// Commits waiting for this write: its own, and those whose write it
	// replaced before they started.
	waiters []chan<- copyResult
}

type copyResult struct {
	index int
	err   error
}

// Option adjusts a Ledger.
type Option func(*Ledger)

// WithCopyWriterForTest is for tests only: every write of a copy goes
// through w, which gets the real write as write and may delay it, skip it or
// fail instead, to play a slow, hung or failing disk.
func WithCopyWriterForTest(w func(path string, generation uint64, write func() error) error) Option {
	return func(l *Ledger) { l.writeForTest = w }
}

// WithWriteObserver has fn called after each write of a copy, with its
// outcome, including writes that finish after their commit returned. It is
// called before the commit waiting for that write learns the outcome.
func WithWriteObserver(fn func(path string, generation uint64, err error)) Option {
	return func(l *Ledger) { l.observe = fn }
}

// New returns the ledger named name kept in each of dirs, creating the
// directories if needed.
func New(dirs []string, name string, opts ...Option) (*Ledger, error) {
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
		path := filepath.Join(abs, name)
		l.paths = append(l.paths, path)
		l.copies = append(l.copies, copyState{status: CopyStatus{Path: path}})
		l.files = append(l.files, newCopyFile(path))
	}
	for _, o := range opts {
		o(l)
	}
	return l, nil
}

// Paths returns the path of every copy.
func (l *Ledger) Paths() []string { return append([]string(nil), l.paths...) }

// CopyStatus describes one copy: as Load found it, then as commits left it.
type CopyStatus struct {
	Path    string
	Missing bool // no file was found, and none has been written since
	// Generation is the newest generation known to be durable on the copy:
	// read from it by Load or written since. Zero when there is none.
	Generation uint64
	// Err is the copy's problem, nil when none: why Load found it invalid,
	// or why its last write failed. A successful write clears it.
	Err error
	// Writing is the generation being written to the copy, zero when no
	// write is in flight; WritingSince is when that write began, so a long
	// one shows a slow or hung disk. Queued is the generation waiting for
	// it to finish, zero when none.
	Writing      uint64
	WritingSince time.Time
	Queued       uint64
}

// Copies returns every copy's status now, in the order of Paths.
func (l *Ledger) Copies() []CopyStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]CopyStatus, len(l.copies))
	for i, c := range l.copies {
		out[i] = c.status
	}
	return out
}

// Loaded is the result of reading every copy.
type Loaded struct {
	// Found is false when no copy exists at all (a new sled).
	Found      bool
	Generation uint64
	Payload    []byte
	Copies     []CopyStatus
}

// Load reads every copy and returns the highest valid generation. Temporary
// files, from interrupted commits or kept for the next write, are removed.
// When copies exist but none is valid it returns ErrNoValidCopy (wrapped
// with every copy's problem) along with the per-copy statuses. Load is for
// start-up, before any commit: it would remove the temporary file of a
// write in flight.
func (l *Ledger) Load() (Loaded, error) { return l.LoadChecked(nil) }

// LoadChecked is Load with check applied to the payload of every copy whose
// checksum is right: a copy check refuses is invalid (ErrInvalidContent),
// like a torn one, so an older valid copy wins over it. A checksum only
// proves that the bytes are the ones written, not that whoever wrote them
// wrote something this version can use.
func (l *Ledger) LoadChecked(check func(generation uint64, payload []byte) error) (Loaded, error) {
	var out Loaded
	anyExists := false
	for _, path := range l.paths {
		removeStaleTemps(path)
		st := CopyStatus{Path: path}
		gen, payload, err := readCopy(path)
		if err == nil && check != nil {
			if cerr := check(gen, payload); cerr != nil {
				err = fmt.Errorf("%w: generation %d: %v", ErrInvalidContent, gen, cerr)
			}
		}
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
	l.mu.Lock()
	for i, st := range out.Copies {
		if l.copies[i].writing == nil {
			l.copies[i].status = st
		}
	}
	l.mu.Unlock()
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

// CommitResult says what a commit did to each copy by the time it returned.
type CommitResult struct {
	Written []string
	Failed  map[string]error
	// Writing lists the copies still being written: the commit went ahead
	// without them. Their outcome shows later in Copies.
	Writing []string
}

// Commit is CommitContext without a deadline: it fails only when every copy
// failed, so with every disk hung it waits for one of them.
func (l *Ledger) Commit(generation uint64, payload []byte) (CommitResult, error) {
	return l.CommitContext(context.Background(), generation, payload)
}

// CommitContext durably writes payload as generation to every copy,
// concurrently, and returns once one copy is durable and every copy that
// started at once has finished or had StragglerWait more: a copy still
// writing an earlier commit is not waited for. It fails when every copy
// failed, or when ctx ends before one copy is durable; writes still in
// flight then go on, and may land. A commit older than one already made
// (ErrGenerationBehind) writes nothing.
//
// A write waiting behind a copy's write in flight is replaced by a newer
// commit's; the replaced commit then counts the newer write as its own on
// that copy.
func (l *Ledger) CommitContext(ctx context.Context, generation uint64, payload []byte) (CommitResult, error) {
	res := CommitResult{Failed: map[string]error{}}
	data := encode(generation, payload)
	results := make(chan copyResult, len(l.paths))
	prompt := make([]bool, len(l.paths))
	l.mu.Lock()
	if generation < l.floor {
		floor := l.floor
		l.mu.Unlock()
		return res, fmt.Errorf("%w: generation %d after generation %d", ErrGenerationBehind, generation, floor)
	}
	l.floor = generation
	for i := range l.copies {
		prompt[i] = l.submitLocked(i, &job{generation: generation, data: data, waiters: []chan<- copyResult{results}})
	}
	l.mu.Unlock()

	resolved := make([]bool, len(l.paths))
	promptLeft := 0
	for _, p := range prompt {
		if p {
			promptLeft++
		}
	}
	var straggler *time.Timer
	var stragglerC <-chan time.Time
	defer func() {
		if straggler != nil {
			straggler.Stop()
		}
	}()
wait:
	for left := len(l.paths); left > 0; {
		select {
		case r := <-results:
			left--
			resolved[r.index] = true
			if prompt[r.index] {
				promptLeft--
			}
			if r.err != nil {
				res.Failed[l.paths[r.index]] = r.err
			} else {
				res.Written = append(res.Written, l.paths[r.index])
			}
			if len(res.Written) > 0 {
				if promptLeft == 0 {
					break wait
				}
				if straggler == nil {
					straggler = time.NewTimer(StragglerWait)
					stragglerC = straggler.C
				}
			}
		case <-stragglerC:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	for i, done := range resolved {
		if !done {
			res.Writing = append(res.Writing, l.paths[i])
		}
	}
	if len(res.Written) > 0 {
		return res, nil
	}
	var errs []error
	for _, path := range l.paths {
		if err, ok := res.Failed[path]; ok {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	if len(res.Writing) > 0 {
		errs = append(errs, fmt.Errorf("still writing %s: %w", strings.Join(res.Writing, ", "), ctx.Err()))
	}
	return res, fmt.Errorf("no ledger copy could be written: %w", errors.Join(errs...))
}

// submitLocked hands j to copy i and reports whether its write started now
// rather than behind one in flight.
func (l *Ledger) submitLocked(i int, j *job) bool {
	c := &l.copies[i]
	if c.writing == nil {
		c.writing = j
		c.status.Writing, c.status.WritingSince = j.generation, time.Now()
		go l.run(i, j)
		return true
	}
	if c.queued != nil {
		j.waiters = append(c.queued.waiters, j.waiters...)
	}
	c.queued = j
	c.status.Queued = j.generation
	return false
}

// run writes j to copy i, then whatever was queued behind it, one at a time.
func (l *Ledger) run(i int, j *job) {
	path := l.paths[i]
	for j != nil {
		err := l.write(i, j)
		if l.observe != nil {
			l.observe(path, j.generation, err)
		}
		l.mu.Lock()
		c := &l.copies[i]
		if err == nil {
			c.status.Generation, c.status.Missing, c.status.Err = j.generation, false, nil
		} else {
			c.status.Err = fmt.Errorf("writing generation %d: %w", j.generation, err)
		}
		for _, w := range j.waiters {
			w <- copyResult{index: i, err: err} // buffered: one slot per copy
		}
		j, c.queued = c.queued, nil
		c.writing = j
		c.status.Queued = 0
		if j != nil {
			c.status.Writing, c.status.WritingSince = j.generation, time.Now()
		} else {
			c.status.Writing, c.status.WritingSince = 0, time.Time{}
		}
		l.mu.Unlock()
	}
}

func (l *Ledger) write(i int, j *job) error {
	write := func() error { return l.files[i].write(j.data) }
	if l.writeForTest != nil {
		return l.writeForTest(l.paths[i], j.generation, write)
	}
	return write()
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
