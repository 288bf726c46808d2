package saga_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestN5_RecoverResumesASagaCrashedAtEachNodeAndRerunsThatNode(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		for _, at := range []window{beforeAction, afterAction} {
			for k, node := range nodes {
				t.Run(at.String()+"-"+node, func(t *testing.T) {
					owner, w := uuid.New(), &world{}
					id := crashAt(t, db, owner, w, at, node)

					restarted := newEngine(t, db.Open(t), owner, w)
					if n, err := restarted.Recover(ctx); n != 1 || err != nil {
						t.Fatalf("Recover: %d, %v; want the one saga", n, err)
					}
					res, err := restarted.Wait(waitCtx(t), id)
					if err != nil || res.State != saga.StateDone {
						t.Fatalf("resumed saga: %s, %v; want done", res.State, err)
					}
					wantOutputs(t, res, len(nodes))
					for i, n := range nodes {
						want := 1
						if i == k && at == afterAction {
							want = 2 // it ran, but its outcome was never logged
						}
						if got := w.count("do " + n); got != want {
							t.Errorf("%s ran %d times, want %d (journal %v)", n, got, want, w.entries())
						}
					}
					if s := restarted.Stats(); s.Recovered != 1 || s.Done != 1 {
						t.Fatalf("stats %+v", s)
					}
				})
			}
		}
	})
}

func TestN5_RecoverGoesOnUnwindingAnUnwindingSaga(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		owner, w := uuid.New(), &world{failAction: "d"}
		id := crashAt(t, db, owner, w, afterUndo, "b")

		restarted := newEngine(t, db.Open(t), owner, w)
		if n, err := restarted.Recover(ctx); n != 1 || err != nil {
			t.Fatalf("Recover: %d, %v", n, err)
		}
		res, err := restarted.Wait(waitCtx(t), id)
		var actionErr *saga.ActionError
		if res.State != saga.StateUnwound || !errors.As(err, &actionErr) || actionErr.Node != "d" {
			t.Fatalf("resumed saga: %s, %v; want unwound by d", res.State, err)
		}
		for entry, want := range map[string]int{"do d": 1, "undo b": 2, "undo a": 1} {
			if got := w.count(entry); got != want {
				t.Errorf("%q %d times, want %d (journal %v)", entry, got, want, w.entries())
			}
		}
	})
}

func TestN5_ANexusRecoversOnlyTheSagasItOwns(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		owner, w := uuid.New(), &world{}
		id := crashAt(t, db, owner, w, afterAction, "b")
		ds := db.Open(t)
		before := eventsOf(t, ds, id)

		other := newEngine(t, ds, uuid.New(), w)
		if n, err := other.Recover(ctx); n != 0 || err != nil {
			t.Fatalf("another nexus recovered %d sagas (%v)", n, err)
		}
		if _, err := other.Wait(ctx, id); !errors.Is(err, saga.ErrNotRunning) {
			t.Fatalf("Wait on another nexus's saga: %v, want ErrNotRunning", err)
		}
		rec, err := ds.SagaGet(ctx, id)
		if err != nil || rec.State != saga.StateRunning || rec.Owner != owner || len(eventsOf(t, ds, id)) != len(before) {
			t.Fatalf("another nexus touched the saga: %+v, %v", rec, err)
		}

		forgetful := saga.New(ds, owner, zaptest.NewLogger(t))
		if n, err := forgetful.Recover(ctx); n != 0 || !errors.Is(err, saga.ErrUnknownTemplate) {
			t.Fatalf("Recover without the template: %d, %v; want 0 and ErrUnknownTemplate", n, err)
		}

		ownerAgain := newEngine(t, ds, owner, w)
		if n, err := ownerAgain.Recover(ctx); n != 1 || err != nil {
			t.Fatalf("the owner recovered %d (%v)", n, err)
		}
		if res, err := ownerAgain.Wait(waitCtx(t), id); err != nil || res.State != saga.StateDone {
			t.Fatalf("resumed saga: %s, %v", res.State, err)
		}
	})
}

// A node cut short by a crash runs again on recovery. If that new run
// fails, the saga unwinds, and the node must be undone as well: the run the
// crash cut short may have taken effect (a VMM registered on a sled, say),
// and the failure of the new run says nothing about it.
func TestN5_ANodeThatFailsWhenRerunAfterACrashIsStillUndone(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		for _, at := range []window{beforeAction, afterAction} {
			t.Run(at.String(), func(t *testing.T) {
				owner := uuid.New()
				id := crashAt(t, db, owner, &world{}, at, "b")

				w := &world{failAction: "b"}
				restarted := newEngine(t, db.Open(t), owner, w)
				if n, err := restarted.Recover(ctx); n != 1 || err != nil {
					t.Fatalf("Recover: %d, %v", n, err)
				}
				res, err := restarted.Wait(waitCtx(t), id)
				var actionErr *saga.ActionError
				if res.State != saga.StateUnwound || !errors.As(err, &actionErr) || actionErr.Node != "b" {
					t.Fatalf("resumed saga: %s, %v; want unwound by b", res.State, err)
				}
				if got, want := w.entries(), []string{"do b", "undo b", "undo a"}; !slices.Equal(got, want) {
					t.Fatalf("after the restart ran %v, want %v", got, want)
				}
				if logged := eventsOf(t, db.Open(t), id); !logged["b failed"] || !logged["b undo_succeeded"] {
					t.Fatalf("log %v: want b failed and undone", logged)
				}
			})
		}
	})
}

// The same when the nexus that saw the new run fail dies too, before it
// could undo anything: the next one still undoes the node, from the log
// alone.
func TestN5_ThatUndoIsOwedEvenAfterASecondCrash(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		owner := uuid.New()
		id := crashAt(t, db, owner, &world{}, afterAction, "b")

		// The second nexus: b fails again, and the database goes away
		// just as the unwinding starts; then this nexus dies too.
		store := &refusingStore{Store: db.Open(t), refuse: saga.EventUndoStarted, refused: make(chan struct{})}
		second := newEngine(t, store, owner, &world{failAction: "b"})
		if n, err := second.Recover(ctx); n != 1 || err != nil {
			t.Fatalf("Recover: %d, %v", n, err)
		}
		select {
		case <-store.refused:
		case <-waitCtx(t).Done():
			t.Fatal("the second nexus never began to undo")
		}
		gone, cancel := context.WithCancel(ctx)
		cancel()
		second.Shutdown(gone) //nolint:errcheck // dying, as with kill -9
		if logged := eventsOf(t, db.Open(t), id); !logged["b failed"] || logged["b undo_started"] {
			t.Fatalf("log %v: want b failed and nothing undone yet", logged)
		}

		w := &world{}
		third := newEngine(t, db.Open(t), owner, w)
		if n, err := third.Recover(ctx); n != 1 || err != nil {
			t.Fatalf("Recover: %d, %v", n, err)
		}
		res, err := third.Wait(waitCtx(t), id)
		if res.State != saga.StateUnwound || err == nil {
			t.Fatalf("resumed saga: %s, %v; want unwound", res.State, err)
		}
		if got, want := w.entries(), []string{"undo b", "undo a"}; !slices.Equal(got, want) {
			t.Fatalf("the third nexus ran %v, want %v", got, want)
		}
	})
}

// refusingStore fails every append of one event type, as a database that
// went away would.
type refusingStore struct {
	saga.Store
	refuse  saga.EventType
	refused chan struct{}
	once    sync.Once
}

func (s *refusingStore) SagaAppendEvent(ctx context.Context, e saga.Event) error {
	if e.Type == s.refuse {
		s.once.Do(func() { close(s.refused) })
		return errors.New("database unreachable")
	}
	return s.Store.SagaAppendEvent(ctx, e)
}

// TestN5_ASagaWhoseCreationCommittedButAnsweredAnErrorStillRuns: a
// database that fails over between committing a saga's row and answering
// leaves the caller an error and the row running, owned by this live
// replica, which would not look at it again until it restarted (R2).
func TestN5_ASagaWhoseCreationCommittedButAnsweredAnErrorStillRuns(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		w := &world{}
		ds := db.Open(t)
		store := &ambiguousStore{Store: ds, unreadable: 3}
		nexusID := uuid.New()
		activeReplica(t, ds, nexusID)
		e := newEngine(t, store, nexusID, w)
		if _, err := e.Start(ctx, templateName, params{Base: base}); err == nil {
			t.Fatal("Start answered nil though its creation answered an error")
		}
		testutil.WaitFor(t, patience, func() error {
			left, err := ds.SagaListUnfinished(ctx, nexusID)
			if err == nil && len(left) > 0 {
				err = fmt.Errorf("saga %s is still %s after its creation answered an error", left[0].ID, left[0].State)
			}
			return err
		})
		if got, want := w.entries(), []string{"do a", "do b", "do c", "do d"}; !slices.Equal(got, want) {
			t.Fatalf("ran %v, want %v", got, want)
		}
	})
}

// ambiguousStore commits every saga it creates and answers with an error,
// as a database whose primary failed before acknowledging a commit does;
// its first reads of a saga fail too, as while the standby takes over.
type ambiguousStore struct {
	saga.Store
	mu         sync.Mutex
	unreadable int
}

func (s *ambiguousStore) SagaCreate(ctx context.Context, r saga.Record) error {
	if err := s.Store.SagaCreate(ctx, r); err != nil {
		return err
	}
	return errors.New("connection reset before the commit was acknowledged")
}

func (s *ambiguousStore) SagaGet(ctx context.Context, id uuid.UUID) (saga.Record, error) {
	s.mu.Lock()
	refuse := s.unreadable > 0
	s.unreadable--
	s.mu.Unlock()
	if refuse {
		return saga.Record{}, errors.New("database unavailable")
	}
	return s.Store.SagaGet(ctx, id)
}
