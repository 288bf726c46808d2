package saga_test

import (
	"errors"
	"testing"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/rackplane/rackplane/services/nexus/saga"
)

func TestN5_RecoverResumesASagaCrashedAtEachNodeAndRerunsThatNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db database) {
		for _, at := range []window{beforeAction, afterAction} {
			for k, node := range nodes {
				t.Run(at.String()+"-"+node, func(t *testing.T) {
					owner, w := uuid.New(), &world{}
					id := crashAt(t, db, owner, w, at, node)

					restarted := newEngine(t, db.open(t), owner, w)
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
	forEachBackend(t, func(t *testing.T, db database) {
		owner, w := uuid.New(), &world{failAction: "d"}
		id := crashAt(t, db, owner, w, afterUndo, "b")

		restarted := newEngine(t, db.open(t), owner, w)
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
	forEachBackend(t, func(t *testing.T, db database) {
		owner, w := uuid.New(), &world{}
		id := crashAt(t, db, owner, w, afterAction, "b")
		ds := db.open(t)
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
