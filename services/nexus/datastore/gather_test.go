package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

// together makes the calls at once while the shared statements are held,
// so that they queue, then lets them go: on PostgreSQL they share
// statements, as concurrent force-terminates do under load.
func together(t *testing.T, ds *datastore.DataStore, calls ...func()) {
	t.Helper()
	waiting, release := ds.HoldSharedStatements()
	var wg sync.WaitGroup
	for _, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call()
		}()
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := waiting(); n != len(calls) {
			return fmt.Errorf("%d of %d calls queued", n, len(calls))
		}
		return nil
	})
	release()
	wg.Wait()
}

// row names a row: its table and id.
type row struct {
	table string
	id    uuid.UUID
}

// sameWriter fails the test unless every row was last written by one
// transaction (one statement, since these statements commit on their own).
func sameWriter(t *testing.T, ds *datastore.DataStore, want bool, rows ...row) {
	t.Helper()
	writers := map[string]bool{}
	for _, r := range rows {
		xmin, err := ds.RowWriter(ctx, r.table, r.id)
		if err != nil {
			t.Fatal(err)
		}
		writers[xmin] = true
	}
	if (len(writers) == 1) != want {
		t.Errorf("rows %v were last written by %d transactions; want one transaction: %v", rows, len(writers), want)
	}
}

// F2, N10: force-terminates that record their wishes at the same time share
// one statement on PostgreSQL, and each still gets what it would alone:
// the wish written only where its own caller is a collaborator, its own
// instance and VMMs, ErrNotFound with nothing written otherwise. Two wishes
// for one instance never share a statement.
func TestF2_StopWishesMadeTogetherShareAStatementAndKeepEachCallersScope(t *testing.T) {
	ds := racktest.NewDatabase(t, datastore.Postgres).Open(t)
	mine, sled := fixture(t, ds)
	theirs, _ := fixture(t, ds)
	running, vmm := runningIn(t, ds, mine, sled, "running")
	idle, idleToo := newInstance(mine.ID, "idle"), newInstance(mine.ID, "idle-too")
	for _, inst := range []model.Instance{idle, idleToo} {
		inst.IntendedState = model.IntendRunning
		if err := ds.InstanceCreate(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	other, otherVMM := runningIn(t, ds, theirs, sled, "other")
	untouched, _ := runningIn(t, ds, theirs, sled, "untouched")
	before, err := ds.InstanceGet(ctx, untouched.ID)
	if err != nil {
		t.Fatal(err)
	}
	onlyMine := datastore.ProjectScope{Projects: []uuid.UUID{mine.ID}}
	everywhere := datastore.ProjectScope{All: true}

	type answer struct {
		snap model.InstanceSnapshot
		err  error
	}
	wishes := []struct {
		id    uuid.UUID
		scope datastore.ProjectScope
	}{
		{running.ID, onlyMine},
		{idle.ID, onlyMine},
		{untouched.ID, onlyMine}, // not the caller's
		{uuid.New(), everywhere}, // no such instance
		{other.ID, onlyMine},     // not the caller's…
		{other.ID, everywhere},   // …but this caller's, in a later statement
		{running.ID, everywhere}, // the same instance again: a later statement too
		{idleToo.ID, onlyMine},
	}
	answers := make([]answer, len(wishes))
	var calls []func()
	for i, w := range wishes {
		calls = append(calls, func() {
			answers[i].snap, answers[i].err = ds.InstanceIntendStopped(ctx, w.id, w.scope, now.Add(time.Minute))
		})
	}
	together(t, ds, calls...)

	for _, i := range []int{2, 3, 4} {
		if !errors.Is(answers[i].err, model.ErrNotFound) {
			t.Errorf("wish %d: %v, want ErrNotFound", i, answers[i].err)
		}
	}
	for _, i := range []int{0, 1, 5, 6, 7} {
		a := answers[i]
		if a.err != nil || a.snap.Instance.ID != wishes[i].id || a.snap.Instance.IntendedState != model.IntendStopped {
			t.Errorf("wish %d: (%+v, %v), want instance %s meant to stop", i, a.snap.Instance, a.err, wishes[i].id)
		}
	}
	for _, i := range []int{0, 6} {
		if a := answers[i].snap.Active; a == nil || a.ID != vmm.ID || a.Runtime.Generation != 3 {
			t.Errorf("wish %d for the running instance returned VMM %+v, want %s at generation 3", i, a, vmm.ID)
		}
	}
	if answers[1].snap.Active != nil || answers[1].snap.Target != nil {
		t.Errorf("the idle instance's wish returned VMMs %+v, %+v", answers[1].snap.Active, answers[1].snap.Target)
	}
	if a := answers[5].snap.Active; a == nil || a.ID != otherVMM.ID {
		t.Errorf("the other project's instance returned VMM %+v, want %s", a, otherVMM.ID)
	}
	if got, err := ds.InstanceGet(ctx, untouched.ID); err != nil || got.IntendedState != model.IntendRunning ||
		!got.TimeModified.Equal(before.TimeModified) {
		t.Errorf("an instance out of the caller's scope changed: (%+v, %v)", got, err)
	}
	// Each idle instance had one wish, so both went in the first statement.
	sameWriter(t, ds, true, row{"instance", idle.ID}, row{"instance", idleToo.ID})
}

// F4, F5: settles made at the same time share one statement on
// PostgreSQL, each write still behind its own guard: the one whose VMM
// moved on since it was read writes nothing and is settled afresh, alone.
// A settle that fails the shared statement fails alone, and the others are
// written.
func TestF4_SettlesMadeTogetherShareAStatementAndEachKeepsItsGuard(t *testing.T) {
	ds := racktest.NewDatabase(t, datastore.Postgres).Open(t)
	t.Run("guards", func(t *testing.T) {
		first, movedOn, last := runningOn(t, ds), runningOn(t, ds), runningOn(t, ds)
		// A racing stop destroyed this one first, at a later generation.
		if _, err := ds.VMMUpdateRuntime(ctx, movedOn.Active.ID, destroyedAt(movedOn, 6)[0].Runtime); err != nil {
			t.Fatal(err)
		}
		froms := []model.InstanceSnapshot{first, movedOn, last}
		results := make([]datastore.SettleResult, len(froms))
		errs := make([]error, len(froms))
		var calls []func()
		for i, from := range froms {
			calls = append(calls, func() {
				results[i], errs[i] = ds.InstanceSettleFrom(ctx, from, destroyedAt(from, 4), settleAt)
			})
		}
		together(t, ds, calls...)
		for i, from := range froms {
			wantWritten, wantVMMGen := true, uint64(4)
			if i == 1 {
				wantWritten, wantVMMGen = false, 6
			}
			if errs[i] != nil || results[i].Outcome != datastore.SettleWritten || results[i].VMMWritten[0] != wantWritten {
				t.Errorf("settle %d: (%+v, %v), want written with VMM written %v", i, results[i], errs[i], wantWritten)
			}
			inst, err := ds.InstanceGet(ctx, from.Instance.ID)
			if err != nil || inst.Runtime.State != model.InstanceNoVMM || inst.Runtime.Generation != 3 {
				t.Errorf("instance %d: (%+v, %v), want no_vmm at generation 3", i, inst.Runtime, err)
			}
			if v, err := ds.VMMGet(ctx, from.Active.ID); err != nil || v.Runtime.Generation != wantVMMGen {
				t.Errorf("VMM %d: (%+v, %v), want generation %d", i, v.Runtime, err, wantVMMGen)
			}
		}
		sameWriter(t, ds, true, row{"instance", first.Instance.ID}, row{"vmm", first.Active.ID},
			row{"instance", last.Instance.ID}, row{"vmm", last.Active.ID})
		sameWriter(t, ds, false, row{"instance", first.Instance.ID}, row{"instance", movedOn.Instance.ID})
	})
	t.Run("one failing", func(t *testing.T) {
		bad, good := runningOn(t, ds), runningOn(t, ds)
		// PostgreSQL refuses a NUL in text: the shared statement fails.
		badWrite := []model.VMMWrite{{ID: bad.Active.ID, Runtime: model.VMMRuntime{State: model.VMMFailed,
			FailureReason: "no\x00such", Generation: 4, TimeUpdated: now.Add(time.Second)}}}
		var badErr, goodErr error
		var goodRes datastore.SettleResult
		together(t, ds,
			func() { _, badErr = ds.InstanceSettleFrom(ctx, bad, badWrite, settleAt) },
			func() { goodRes, goodErr = ds.InstanceSettleFrom(ctx, good, destroyedAt(good, 4), settleAt) })
		if badErr == nil {
			t.Error("a write PostgreSQL refuses succeeded")
		}
		if goodErr != nil || goodRes.Outcome != datastore.SettleWritten {
			t.Errorf("the settle sharing its statement: (%+v, %v), want written", goodRes, goodErr)
		}
		if v, err := ds.VMMGet(ctx, bad.Active.ID); err != nil || v.Runtime.Generation != 3 {
			t.Errorf("the refused VMM write: (%+v, %v), want generation 3 unchanged", v.Runtime, err)
		}
		if inst, err := ds.InstanceGet(ctx, bad.Instance.ID); err != nil || inst.Runtime.Generation != 2 {
			t.Errorf("the refused settle's instance: (%+v, %v), want generation 2 unchanged", inst.Runtime, err)
		}
	})
}

// F2: a caller that gives up (a client that hung up, a deadline) stops
// waiting for a shared statement at once; the statement still goes, for
// the calls sharing it, like a statement already on the wire.
func TestF2_ACallerThatGivesUpStopsWaitingForASharedStatement(t *testing.T) {
	ds := racktest.NewDatabase(t, datastore.Postgres).Open(t)
	p, s := fixture(t, ds)
	inst, _ := runningIn(t, ds, p, s, "i")
	waiting, release := ds.HoldSharedStatements()
	defer release()
	callCtx, cancel := context.WithCancel(ctx)
	answered := make(chan error, 1)
	go func() {
		_, err := ds.InstanceIntendStopped(callCtx, inst.ID, datastore.ProjectScope{All: true}, now)
		answered <- err
	}()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if waiting() != 1 {
			return errors.New("the wish is not queued yet")
		}
		return nil
	})
	cancel()
	if err := <-answered; !errors.Is(err, context.Canceled) {
		t.Fatalf("the wish of a caller that gave up: %v, want context.Canceled", err)
	}
}

// N10, F2: inside one shared statement each wish is authorized by its own
// caller's projects alone: a caller who may stop instances of one project
// does not lend that right to another caller's wish in the same statement.
func TestN10_ACallersProjectsNeverAuthorizeAnotherCallersWishInTheSameStatement(t *testing.T) {
	ds := racktest.NewDatabase(t, datastore.Postgres).Open(t)
	mine, sled := fixture(t, ds)
	theirs, _ := fixture(t, ds)
	myInstance, _ := runningIn(t, ds, mine, sled, "mine")
	theirInstance, _ := runningIn(t, ds, theirs, sled, "theirs")
	coveted, _ := runningIn(t, ds, theirs, sled, "coveted")
	before, err := ds.InstanceGet(ctx, coveted.ID)
	if err != nil {
		t.Fatal(err)
	}
	me := datastore.ProjectScope{Projects: []uuid.UUID{mine.ID}}
	them := datastore.ProjectScope{Projects: []uuid.UUID{theirs.ID}}
	var mineErr, theirErr, covetedErr error
	together(t, ds,
		func() { _, mineErr = ds.InstanceIntendStopped(ctx, myInstance.ID, me, now.Add(time.Minute)) },
		func() { _, theirErr = ds.InstanceIntendStopped(ctx, theirInstance.ID, them, now.Add(time.Minute)) },
		// My wish for their instance, while they stop one of theirs in
		// the same statement.
		func() { _, covetedErr = ds.InstanceIntendStopped(ctx, coveted.ID, me, now.Add(time.Minute)) },
	)
	if mineErr != nil || theirErr != nil {
		t.Fatalf("each caller's own wish: %v, %v; want both written", mineErr, theirErr)
	}
	if !errors.Is(covetedErr, model.ErrNotFound) {
		t.Errorf("a wish for another project's instance: %v, want ErrNotFound", covetedErr)
	}
	if got, err := ds.InstanceGet(ctx, coveted.ID); err != nil || got.IntendedState != before.IntendedState ||
		!got.TimeModified.Equal(before.TimeModified) {
		t.Errorf("the other project's instance changed: (%+v, %v)", got, err)
	}
	// The two allowed wishes did share a statement: the refusal above was
	// made inside it.
	sameWriter(t, ds, true, row{"instance", myInstance.ID}, row{"instance", theirInstance.ID})
}

// waitLockWaiters waits until n of the database's sessions wait for a lock.
func waitLockWaiters(t *testing.T, ds *datastore.DataStore, n int) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		got, err := ds.LockWaiters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got != n {
			return fmt.Errorf("%d sessions wait for a lock, want %d", got, n)
		}
		return nil
	})
}

// F2, F4, F6: a row another transaction holds (an operator's psql session,
// a long transaction) holds up the force-terminate of its own instance
// only: the wish and the settle of a free instance, made meanwhile, are
// answered within their callers' own short deadlines.
func TestF2_ALockedRowHoldsUpTheForceTerminateOfItsOwnInstanceOnly(t *testing.T) {
	ds := racktest.NewDatabase(t, datastore.Postgres).Open(t)
	all := datastore.ProjectScope{All: true}
	for _, step := range []string{"wish", "settle"} {
		t.Run(step, func(t *testing.T) {
			held, free := runningOn(t, ds), runningOn(t, ds)
			release, err := ds.HoldRow(ctx, "instance", held.Instance.ID)
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			heldDone := make(chan error, 1)
			go func() {
				var err error
				if step == "wish" {
					_, err = ds.InstanceIntendStopped(ctx, held.Instance.ID, all, now.Add(time.Minute))
				} else {
					_, err = ds.InstanceSettleFrom(ctx, held, destroyedAt(held, 4), settleAt)
				}
				heldDone <- err
			}()
			waitLockWaiters(t, ds, 1)

			freeCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if step == "wish" {
				if _, err := ds.InstanceIntendStopped(freeCtx, free.Instance.ID, all, now.Add(time.Minute)); err != nil {
					t.Fatalf("the wish for a free instance while another instance's row is held: %v", err)
				}
			} else {
				res, err := ds.InstanceSettleFrom(freeCtx, free, destroyedAt(free, 4), settleAt)
				if err != nil || res.Outcome != datastore.SettleWritten {
					t.Fatalf("the settle of a free instance while another instance's row is held: (%+v, %v)", res, err)
				}
			}
			release()
			if err := <-heldDone; err != nil {
				t.Fatalf("the held instance's %s once its row was let go: %v", step, err)
			}
		})
	}
}

// F2, F4: when a shared statement times out, each of its calls is made
// again alone, under its own caller's deadline, not the expired deadline
// of the statement: the calls succeed once the database answers again.
func TestF2_ACallWhoseSharedStatementTimedOutIsMadeAgainUnderItsOwnDeadline(t *testing.T) {
	ds := racktest.NewDatabase(t, datastore.Postgres).Open(t)
	ds.SetSharedStatementTimeout(200 * time.Millisecond)
	var froms []model.InstanceSnapshot
	for range 3 {
		froms = append(froms, runningOn(t, ds))
	}
	// Every statement on instances waits, the shared one until it times
	// out, then each call made alone.
	release, err := ds.HoldTable(ctx, "instance")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	errs := make([]error, len(froms))
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		var calls []func()
		for i, from := range froms {
			calls = append(calls, func() {
				callCtx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				_, errs[i] = ds.InstanceIntendStopped(callCtx, from.Instance.ID, datastore.ProjectScope{All: true}, now.Add(time.Minute))
			})
		}
		together(t, ds, calls...)
	}()
	testutil.WaitFor(t, 20*time.Second, func() error {
		select {
		case <-answered:
			return nil // the errors say why
		default:
		}
		n, err := ds.LockWaiters(ctx)
		if err != nil || n != len(froms) {
			return fmt.Errorf("%d calls wait for the table (%v), want all %d, each on its own", n, err, len(froms))
		}
		return nil
	})
	release()
	<-answered
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d, whose shared statement timed out: %v; want it made again under its own deadline", i, err)
		}
	}
}

// F2, N7: a force-terminate whose caller gave up (its deadline passed
// while its wish waited for a shared statement, or while the statement it
// shared waited for its instance's row) never writes its wish later: a
// start that came after the timeout is not undone when the database gets
// to it.
func TestF2_AWishWhoseCallerGaveUpIsNeverWrittenLater(t *testing.T) {
	ds := racktest.NewDatabase(t, datastore.Postgres).Open(t)
	all := datastore.ProjectScope{All: true}
	for _, while := range []string{"queued", "in flight"} {
		t.Run(while, func(t *testing.T) {
			p, s := fixture(t, ds)
			inst, _ := runningIn(t, ds, p, s, "given-up")
			other, _ := runningIn(t, ds, p, s, "other")
			waiting, releaseStatements := ds.HoldSharedStatements()
			defer releaseStatements()
			if while == "in flight" {
				releaseRow, err := ds.HoldRow(ctx, "instance", inst.ID)
				if err != nil {
					t.Fatal(err)
				}
				defer releaseRow()
			}
			gaveUp := make(chan error, 1)
			go func() {
				callCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				_, err := ds.InstanceIntendStopped(callCtx, inst.ID, all, now.Add(time.Minute))
				gaveUp <- err
			}()
			otherDone := make(chan error, 1)
			go func() {
				_, err := ds.InstanceIntendStopped(ctx, other.ID, all, now.Add(time.Minute))
				otherDone <- err
			}()
			testutil.WaitFor(t, 10*time.Second, func() error {
				if n := waiting(); n != 2 {
					return fmt.Errorf("%d of 2 wishes queued", n)
				}
				return nil
			})
			if while == "in flight" {
				// Both wishes go in one statement, which meets the
				// held row.
				releaseStatements()
			}
			if err := <-gaveUp; !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("a wish that waited past its deadline: %v, want context.DeadlineExceeded", err)
			}
			// Nothing may still be waiting to write it: let the row and
			// the statements go.
			testutil.WaitFor(t, 10*time.Second, func() error {
				n, err := ds.LockWaiters(ctx)
				if err != nil || n != 0 {
					return fmt.Errorf("%d statements still wait for the row after its wish's caller gave up (%v)", n, err)
				}
				return nil
			})
			releaseStatements()
			if err := <-otherDone; err != nil {
				t.Fatalf("the other wish: %v", err)
			}
			testutil.WaitFor(t, 10*time.Second, func() error {
				if !ds.SharedStatementsIdle() {
					return errors.New("a shared statement is still in flight")
				}
				return nil
			})
			got, err := ds.InstanceGet(ctx, inst.ID)
			if err != nil || got.IntendedState != model.IntendRunning {
				t.Fatalf("after its caller gave up: (%v, %v), want the instance still meant to run", got.IntendedState, err)
			}
		})
	}
}
