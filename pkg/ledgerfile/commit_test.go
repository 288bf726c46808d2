package ledgerfile

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/ledgerfile/ledgerfiletest"
	"github.com/rackplane/rackplane/pkg/testutil"
)

// twoCopiesOnFakeDisks is twoCopies with its writes going through disks;
// at the end of the test every hung disk is released and every write
// finished, before the directories go.
func twoCopiesOnFakeDisks(t *testing.T) (*Ledger, []string, *ledgerfiletest.Disks) {
	t.Helper()
	root := t.TempDir()
	disks := ledgerfiletest.NewDisks()
	l, err := New([]string{filepath.Join(root, "m2-0"), filepath.Join(root, "m2-1")}, "zones.ledger",
		WithCopyWriterForTest(disks.Write))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range l.Paths() {
			disks.Release(p)
		}
		testutil.WaitFor(t, 10*time.Second, disks.Idle)
	})
	return l, l.Paths(), disks
}

type commitOutcome struct {
	res CommitResult
	err error
}

func commitAsync(ctx context.Context, l *Ledger, generation uint64, payload string) <-chan commitOutcome {
	out := make(chan commitOutcome, 1)
	go func() {
		res, err := l.CommitContext(ctx, generation, []byte(payload))
		out <- commitOutcome{res, err}
	}()
	return out
}

// waitCommit waits for a commit to return, failing the test if it does not
// within a bound far above StragglerWait.
func waitCommit(t *testing.T, done <-chan commitOutcome) commitOutcome {
	t.Helper()
	var got commitOutcome
	returned := false
	testutil.WaitFor(t, 10*time.Second, func() error {
		select {
		case got = <-done:
			returned = true
		default:
		}
		if !returned {
			return errors.New("the commit has not returned")
		}
		return nil
	})
	return got
}

func waitCopy(t *testing.T, l *Ledger, i int, want func(CopyStatus) bool) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := l.Copies()[i]; !want(st) {
			return fmt.Errorf("copy %d's status is %+v", i, st)
		}
		return nil
	})
}

func TestZ3_ACommitReturnsOnceOneCopyIsDurableWhileAnotherHangs(t *testing.T) {
	l, paths, disks := twoCopiesOnFakeDisks(t)
	disks.Hang(paths[1])
	got := waitCommit(t, commitAsync(context.Background(), l, 1, "one"))
	if got.err != nil {
		t.Fatalf("Commit: %v", got.err)
	}
	if !slices.Equal(got.res.Written, paths[:1]) || !slices.Equal(got.res.Writing, paths[1:]) {
		t.Fatalf("result %+v, want copy 0 written and copy 1 still writing", got.res)
	}
	if st := l.Copies()[1]; st.Writing != 1 || st.WritingSince.IsZero() || st.Generation != 0 || st.Err != nil {
		t.Fatalf("the hung copy's status is %+v, want writing generation 1 since a time", st)
	}
	if gen, payload, err := readCopy(paths[0]); err != nil || gen != 1 || string(payload) != "one" {
		t.Fatalf("copy 0 holds generation %d %q (%v), want 1 \"one\"", gen, payload, err)
	}
	disks.Release(paths[1])
	waitCopy(t, l, 1, func(st CopyStatus) bool { return st.Generation == 1 && st.Writing == 0 && st.Err == nil })
	if gen, _, err := readCopy(paths[1]); err != nil || gen != 1 {
		t.Fatalf("once released copy 1 holds generation %d (%v), want 1", gen, err)
	}
}

// A copy whose write hangs gets no second write beside it, and what is
// committed meanwhile reaches it afterwards, newest last: a write per
// commit would run beside the hung one and could land before it.
func TestZ3_ACopyIsWrittenOnceAtATimeAndNeverGoesBack(t *testing.T) {
	l, paths, disks := twoCopiesOnFakeDisks(t)
	disks.Hang(paths[1])
	for gen := uint64(1); gen <= 3; gen++ {
		got := waitCommit(t, commitAsync(context.Background(), l, gen, fmt.Sprint(gen)))
		if got.err != nil || !slices.Equal(got.res.Written, paths[:1]) {
			t.Fatalf("commit %d: %+v, %v; want copy 0 written", gen, got.res, got.err)
		}
	}
	if st := l.Copies()[1]; st.Writing != 1 || st.Queued != 3 {
		t.Fatalf("the hung copy's status is %+v, want generation 1 writing and 3 queued", st)
	}
	disks.Release(paths[1])
	waitCopy(t, l, 1, func(st CopyStatus) bool { return st.Generation == 3 && st.Writing == 0 })
	if gen, payload, err := readCopy(paths[1]); err != nil || gen != 3 || string(payload) != "3" {
		t.Fatalf("copy 1 holds generation %d %q (%v), want 3", gen, payload, err)
	}
	most := disks.MostAtOnce(paths[1])
	if started := disks.StartedOn(paths[1]); most != 1 || !slices.Equal(started, []uint64{1, 3}) {
		t.Fatalf("copy 1 had up to %d writes at once, of generations %v; want one at a time, 1 then 3", most, started)
	}
}

func TestZ3_ACommitThatNoCopyMadeDurableFailsWhenItsContextEnds(t *testing.T) {
	l, paths, disks := twoCopiesOnFakeDisks(t)
	for _, p := range paths {
		disks.Hang(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := commitAsync(ctx, l, 5, "five")
	for i := range paths {
		waitCopy(t, l, i, func(st CopyStatus) bool { return st.Writing == 5 })
	}
	cancel()
	got := waitCommit(t, done)
	if !errors.Is(got.err, context.Canceled) || len(got.res.Written) != 0 || len(got.res.Writing) != 2 {
		t.Fatalf("Commit: %+v, %v; want it cancelled with both copies still writing", got.res, got.err)
	}
	// Generation 5 may still land on either copy: an older commit must not
	// follow it there.
	if _, err := l.Commit(4, []byte("four")); !errors.Is(err, ErrGenerationBehind) {
		t.Fatalf("Commit(4) after 5: %v, want ErrGenerationBehind", err)
	}
	for _, p := range paths {
		if started := disks.StartedOn(p); !slices.Equal(started, []uint64{5}) {
			t.Fatalf("%s was written generations %v, want 5 alone", p, started)
		}
		disks.Release(p)
	}
	for i := range paths {
		waitCopy(t, l, i, func(st CopyStatus) bool { return st.Generation == 5 && st.Writing == 0 })
	}
	if _, err := l.Commit(5, []byte("five")); err != nil {
		t.Fatalf("the same generation again: %v", err)
	}
}

func TestZ3_AFailingCopyIsReportedUntilAWriteSucceeds(t *testing.T) {
	l, paths, disks := twoCopiesOnFakeDisks(t)
	disks.FailWith(paths[1], errors.New("input/output error"))
	if res, err := l.Commit(1, []byte("one")); err != nil || !slices.Equal(res.Written, paths[:1]) {
		t.Fatalf("Commit: %+v, %v; want copy 0 written", res, err)
	}
	waitCopy(t, l, 1, func(st CopyStatus) bool {
		return st.Err != nil && st.Generation == 0 && st.Writing == 0
	})
	if err := l.Copies()[1].Err.Error(); err != "writing generation 1: input/output error" {
		t.Fatalf("copy 1's problem is %q", err)
	}
	disks.FailWith(paths[1], nil)
	if _, err := l.Commit(2, []byte("two")); err != nil {
		t.Fatal(err)
	}
	waitCopy(t, l, 1, func(st CopyStatus) bool { return st.Err == nil && st.Generation == 2 })
}
