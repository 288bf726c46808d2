package saga_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestN5_RegisterRefusesMalformedTemplatesAndStartUnknownOnes(t *testing.T) {
	e := saga.New(nil, uuid.New(), zaptest.NewLogger(t))
	act := func(context.Context, *saga.Context) (any, error) { return nil, nil }
	for _, bad := range []saga.Template{
		{Nodes: []saga.Node{{Name: "a", Action: act}}},
		{Name: "empty"},
		{Name: "nameless", Nodes: []saga.Node{{Action: act}}},
		{Name: "twice", Nodes: []saga.Node{{Name: "a", Action: act}, {Name: "a", Action: act}}},
		{Name: "idle", Nodes: []saga.Node{{Name: "a"}}},
	} {
		if err := e.Register(bad); err == nil {
			t.Errorf("template %+v registered", bad)
		}
	}
	good := saga.Template{Name: "good", Nodes: []saga.Node{{Name: "a", Action: act}}}
	if err := e.Register(good); err != nil {
		t.Fatal(err)
	}
	if err := e.Register(good); err == nil {
		t.Error("a template registered twice")
	}
	if _, err := e.Start(ctx, "nope", nil); !errors.Is(err, saga.ErrUnknownTemplate) {
		t.Errorf("start of an unknown template: %v, want ErrUnknownTemplate", err)
	}
}

func TestN5_SagaRunsEveryNodeOnceAndEndsDone(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		w := &world{}
		ds := db.Open(t)
		e := newEngine(t, ds, uuid.New(), w)
		res, err := e.Run(waitCtx(t), templateName, params{Base: base})
		if err != nil || res.State != saga.StateDone {
			t.Fatalf("Run: %s, %v; want done", res.State, err)
		}
		if got, want := w.entries(), []string{"do a", "do b", "do c", "do d"}; !slices.Equal(got, want) {
			t.Fatalf("ran %v, want %v", got, want)
		}
		wantOutputs(t, res, len(nodes))
		logged := eventsOf(t, ds, res.ID)
		for _, n := range nodes {
			if !logged[n+" started"] || !logged[n+" succeeded"] || len(logged) != 2*len(nodes) {
				t.Fatalf("log %v, want started and succeeded for every node", logged)
			}
		}
		again, err := e.Wait(ctx, res.ID)
		if err != nil || again.State != saga.StateDone {
			t.Fatalf("Wait on a finished saga: %s, %v", again.State, err)
		}
		wantOutputs(t, again, len(nodes))
		if s := e.Stats(); s.Started != 1 || s.Done != 1 || s.Running != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestN5_FailureAtEachNodeUndoesTheNodesBeforeItInReverse(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		ds := db.Open(t)
		for k, failing := range nodes {
			t.Run("fail-at-"+failing, func(t *testing.T) {
				w := &world{failAction: failing}
				e := newEngine(t, ds, uuid.New(), w)
				res, err := e.Run(waitCtx(t), templateName, params{Base: base})
				var actionErr *saga.ActionError
				if !errors.As(err, &actionErr) || actionErr.Node != failing || actionErr.SagaID != res.ID ||
					!errors.Is(err, errInjected) {
					t.Fatalf("Run error %v, want the ActionError of %s wrapping the injected failure", err, failing)
				}
				if res.State != saga.StateUnwound {
					t.Fatalf("state %s, want unwound", res.State)
				}
				want := []string{}
				for _, n := range nodes[:k+1] {
					want = append(want, "do "+n)
				}
				for i := k - 1; i >= 0; i-- {
					if nodes[i] != "c" {
						want = append(want, "undo "+nodes[i])
					}
				}
				if got := w.entries(); !slices.Equal(got, want) {
					t.Fatalf("ran %v, want %v", got, want)
				}
				wantOutputs(t, res, k)
				logged := eventsOf(t, ds, res.ID)
				if !logged[failing+" failed"] || logged[failing+" undo_started"] {
					t.Fatalf("log %v: the failed node must be failed and never undone", logged)
				}
				if again, err := e.Wait(ctx, res.ID); again.State != saga.StateUnwound || !errors.As(err, &actionErr) ||
					actionErr.Node != failing {
					t.Fatalf("Wait on the unwound saga: %s, %v", again.State, err)
				}
				if s := e.Stats(); s.Unwound != 1 || s.Done != 0 {
					t.Fatalf("stats %+v", s)
				}
			})
		}
	})
}

// N5, R1: an undo that fails only because its sled is away is tried again
// until the sled answers, however many tries that takes, and its saga then
// unwinds instead of waiting stuck for an operator; one whose sled stays
// away past the bound is stuck as usual.
func TestN5_AnUndoWhoseSledIsAwayIsRetriedUntilItAnswers(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		ds := db.Open(t)
		w := &world{failAction: "d", awayUndo: "a", awayTimes: 4 * undoAttempts}
		e := newEngine(t, ds, uuid.New(), w, saga.WithUndoRetryWhile(away, patience))
		res, err := e.Run(waitCtx(t), templateName, params{Base: base})
		var actionErr *saga.ActionError
		if res.State != saga.StateUnwound || !errors.As(err, &actionErr) || actionErr.Node != "d" {
			t.Fatalf("%s, %v: want the saga unwound by d's failure", res.State, err)
		}
		if got := w.count("undo a"); got != 4*undoAttempts+1 {
			t.Fatalf("a's undo ran %d times, want %d: until its sled answered", got, 4*undoAttempts+1)
		}

		// A clock a minute further on at every reading: the sled stays
		// away past the bound.
		var (
			mu  sync.Mutex
			now = time.Now()
		)
		clock := func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(time.Minute)
			return now
		}
		gone := &world{failAction: "d", awayUndo: "a", awayTimes: -1}
		e = newEngine(t, db.Open(t), uuid.New(), gone, saga.WithUndoRetryWhile(away, 5*time.Minute), saga.WithClock(clock))
		res, err = e.Run(waitCtx(t), templateName, params{Base: base})
		var stuckErr *saga.StuckError
		if res.State != saga.StateStuck || !errors.As(err, &stuckErr) || stuckErr.Node != "a" || !errors.Is(err, errAway) {
			t.Fatalf("%s, %v: want stuck at a's undo once its sled stayed away past the bound", res.State, err)
		}
		if got := gone.count("undo a"); got < undoAttempts+1 || got > undoAttempts+8 {
			t.Fatalf("a's undo ran %d times with its sled away for good, want the bound's few and then %d more", got, undoAttempts)
		}
	})
}

func TestN5_AnUndoThatKeepsFailingLeavesTheSagaStuckAndListed(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		ds := db.Open(t)
		owner := uuid.New()
		w := &world{failAction: "d", failUndo: "a"}
		e := newEngine(t, ds, owner, w)
		res, err := e.Run(waitCtx(t), templateName, params{Base: base})
		var stuckErr *saga.StuckError
		var actionErr *saga.ActionError
		if !errors.As(err, &stuckErr) || stuckErr.Node != "a" || !errors.As(err, &actionErr) || actionErr.Node != "d" ||
			!errors.Is(err, errInjected) {
			t.Fatalf("Run error %v, want a StuckError at a's undo caused by d's failure", err)
		}
		if res.State != saga.StateStuck {
			t.Fatalf("state %s, want stuck", res.State)
		}
		if w.count("undo a") != undoAttempts || w.count("undo b") != 1 {
			t.Fatalf("ran %v: want a's undo tried %d times after b's once", w.entries(), undoAttempts)
		}
		stuck, err := e.Stuck(ctx)
		if err != nil || len(stuck) != 1 || stuck[0].ID != res.ID || stuck[0].Err == nil || stuck[0].Err.Node != "a" ||
			stuck[0].Err.Cause == nil || stuck[0].Err.Cause.Node != "d" {
			t.Fatalf("Stuck: %+v, %v", stuck, err)
		}
		if s := e.Stats(); s.Stuck != 1 || s.Unwound != 0 {
			t.Fatalf("stats %+v", s)
		}
		restarted := newEngine(t, db.Open(t), owner, w)
		if n, err := restarted.Recover(ctx); n != 0 || err != nil {
			t.Fatalf("Recover resumed %d (%v); a stuck saga waits for an operator", n, err)
		}
	})
}

// Omicron's saga tests run every action and undo twice in a row to prove
// them idempotent; WithRepeat lets nexus's sagas do the same.
func TestN5_RepeatedActionsAndUndosEndTheSameWay(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		ds := db.Open(t)
		w := &world{}
		res, err := newEngine(t, ds, uuid.New(), w, saga.WithRepeat(2)).Run(waitCtx(t), templateName, params{Base: base})
		if err != nil || res.State != saga.StateDone {
			t.Fatalf("Run: %s, %v", res.State, err)
		}
		wantOutputs(t, res, len(nodes))
		for _, n := range nodes {
			if w.count("do "+n) != 2 {
				t.Fatalf("ran %v, want every action twice", w.entries())
			}
		}

		w = &world{failAction: "d"}
		res, err = newEngine(t, ds, uuid.New(), w, saga.WithRepeat(2)).Run(waitCtx(t), templateName, params{Base: base})
		if !errors.Is(err, errInjected) || res.State != saga.StateUnwound {
			t.Fatalf("Run: %s, %v; want unwound by d", res.State, err)
		}
		if w.count("undo a") != 2 || w.count("undo b") != 2 || w.count("do d") != 1 {
			t.Fatalf("ran %v, want every undo twice", w.entries())
		}
	})
}

// An error injected after a node's action (WithInjectedErrors) unwinds the
// saga with that node's own undo too, since its action took effect; the
// log records the failure, and the nodes after it never run.
func TestN5_AnErrorInjectedAfterANodeUndoesThatNodeAndThoseBeforeIt(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		ds := db.Open(t)
		w := &world{}
		inject := saga.WithInjectedErrors(func(template, node string) error {
			if template == templateName && node == "b" {
				return errInjected
			}
			return nil
		})
		res, err := newEngine(t, ds, uuid.New(), w, inject).Run(waitCtx(t), templateName, params{Base: base})
		var actionErr *saga.ActionError
		if !errors.Is(err, errInjected) || !errors.As(err, &actionErr) || actionErr.Node != "b" || res.State != saga.StateUnwound {
			t.Fatalf("Run: %s, %v; want unwound by the error injected after b", res.State, err)
		}
		if got, want := w.entries(), []string{"do a", "do b", "undo b", "undo a"}; !slices.Equal(got, want) {
			t.Fatalf("ran %v, want %v", got, want)
		}
	})
}

// TestN5_AnActionThatFailsNotKnowingWhetherItCommittedIsUndoneToo: a
// database cut off mid-commit leaves an action's write maybe committed;
// the chaos harness's db-partition runs found a start saga's VMM row left
// creating for good once its saga had unwound (R1, R2).
func TestN5_AnActionThatFailsNotKnowingWhetherItCommittedIsUndoneToo(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		w := &world{lostAnswer: "b"}
		ambiguous := saga.WithAmbiguousActionErrors(func(err error) bool { return errors.Is(err, errLostAnswer) })
		res, err := newEngine(t, db.Open(t), uuid.New(), w, ambiguous).Run(waitCtx(t), templateName, params{Base: base})
		if !errors.Is(err, errLostAnswer) || res.State != saga.StateUnwound {
			t.Fatalf("Run: %s, %v; want unwound by b's lost answer", res.State, err)
		}
		if got, want := w.entries(), []string{"do a", "do b", "undo b", "undo a"}; !slices.Equal(got, want) {
			t.Fatalf("ran %v, want %v", got, want)
		}
	})
}

func TestN5_ShutdownStopsASagaAtANodeBoundaryAndRecoverFinishesIt(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		owner := uuid.New()
		w := &world{}
		reached, release := make(chan struct{}), make(chan struct{})
		hold := saga.WithHooks(saga.Hooks{BeforeNode: func(_ uuid.UUID, node string) {
			if node == "b" {
				close(reached)
				<-release
			}
		}})
		ds := db.Open(t)
		e := newEngine(t, ds, owner, w, hold)
		id, err := e.Start(ctx, templateName, params{Base: base})
		if err != nil {
			t.Fatal(err)
		}
		<-reached
		shutdown := make(chan error)
		go func() { shutdown <- e.Shutdown(waitCtx(t)) }()
		// A stopping engine refuses before it looks the template up, so
		// polling with an unknown one creates nothing meanwhile.
		testutil.WaitFor(t, patience, func() error {
			if _, err := e.Start(ctx, "unregistered", nil); !errors.Is(err, saga.ErrStopped) {
				return fmt.Errorf("the engine is not stopping yet: %v", err)
			}
			return nil
		})
		close(release)
		if err := <-shutdown; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if _, err := e.Start(ctx, templateName, params{}); !errors.Is(err, saga.ErrStopped) {
			t.Fatalf("Start after Shutdown: %v, want ErrStopped", err)
		}
		if res, err := e.Wait(ctx, id); !errors.Is(err, saga.ErrNotRunning) || res.State != saga.StateRunning {
			t.Fatalf("Wait after shutdown: %s, %v; want running, ErrNotRunning", res.State, err)
		}
		if got := w.entries(); !slices.Equal(got, []string{"do a"}) {
			t.Fatalf("ran %v: a stopping engine must not start b's action", got)
		}

		restarted := newEngine(t, db.Open(t), owner, w)
		if n, err := restarted.Recover(ctx); n != 1 || err != nil {
			t.Fatalf("Recover: %d, %v", n, err)
		}
		res, err := restarted.Wait(waitCtx(t), id)
		if err != nil || res.State != saga.StateDone {
			t.Fatalf("resumed saga: %s, %v", res.State, err)
		}
		wantOutputs(t, res, len(nodes))
		if got := w.entries(); !slices.Equal(got, []string{"do a", "do b", "do c", "do d"}) {
			t.Fatalf("ran %v, want every action once", got)
		}
	})
}

func TestN5_ACallerThatStopsWaitingDoesNotStopItsSaga(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		w := &world{}
		release := make(chan struct{})
		e := newEngine(t, db.Open(t), uuid.New(), w, saga.WithHooks(saga.Hooks{BeforeNode: func(_ uuid.UUID, node string) {
			if node == "c" {
				<-release
			}
		}}))
		impatient, cancel := context.WithCancel(ctx)
		var res saga.Result
		runErr := make(chan error)
		go func() {
			var err error
			res, err = e.Run(impatient, templateName, params{Base: base})
			runErr <- err
		}()
		testutil.WaitFor(t, patience, func() error {
			if w.count("do b") == 0 {
				return errors.New("b has not run")
			}
			return nil
		})
		cancel()
		if err := <-runErr; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run with a cancelled context: %v", err)
		}
		close(release)
		done, err := e.Wait(waitCtx(t), res.ID)
		if err != nil || done.State != saga.StateDone {
			t.Fatalf("the abandoned caller's saga: %s, %v; want done", done.State, err)
		}
	})
}
