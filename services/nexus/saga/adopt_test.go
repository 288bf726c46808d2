package saga_test

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/racktest"
)

// logReads lets a test act when the engine has read a saga's log.
type logReads struct {
	*datastore.DataStore
	afterRead func(id uuid.UUID)
}

func (s *logReads) SagaEvents(ctx context.Context, id uuid.UUID) ([]saga.Event, error) {
	events, err := s.DataStore.SagaEvents(ctx, id)
	if err == nil && s.afterRead != nil {
		s.afterRead(id)
	}
	return events, err
}

type countedParams struct {
	Name string `json:"name"`
}

// X5: adopting the sagas just taken over from an expunged replica resumes
// those and only those. The adopter's own saga, which finishes while the
// adoption reads the adopted saga's log, is not run again (resuming every
// unfinished saga of the replica, as at start-up, ran it twice), and a
// saga the adopter does not own, or that has finished, is left alone.
func TestX5_AdoptingResumesOnlyTheSagasTakenOverAndEachRunsOnce(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		ds := db.Open(t)
		adopter, other := uuid.New(), uuid.New()
		activeReplica(t, ds, adopter)
		activeReplica(t, ds, other)
		var (
			mu   sync.Mutex
			runs = map[string]int{}
			gate = make(chan struct{})
		)
		counted := saga.Template{Name: "counted", Nodes: []saga.Node{{Name: "count",
			Action: saga.ActionWith(func(_ context.Context, _ *saga.Context, p countedParams) (any, error) {
				mu.Lock()
				runs[p.Name]++
				mu.Unlock()
				if p.Name == "own" {
					<-gate
				}
				return nil, nil
			})}}}
		store := &logReads{DataStore: ds}
		e := saga.New(store, adopter, zaptest.NewLogger(t))
		if err := e.Register(counted); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Shutdown(context.Background()) })

		own, err := e.Start(ctx, "counted", countedParams{Name: "own"})
		if err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, patience, func() error {
			mu.Lock()
			defer mu.Unlock()
			if runs["own"] == 0 {
				return context.DeadlineExceeded
			}
			return nil
		})
		record := func(name string, owner uuid.UUID) uuid.UUID {
			params, _ := json.Marshal(countedParams{Name: name})
			r := saga.Record{ID: uuid.New(), Template: "counted", Params: params, Owner: owner, State: saga.StateRunning,
				TimeCreated: time.Now(), TimeStateChanged: time.Now()}
			if err := ds.SagaCreate(ctx, r); err != nil {
				t.Fatal(err)
			}
			return r.ID
		}
		// As SagasReassign leaves them: moved to the adopter, no log yet.
		moved := record("moved", adopter)
		notMine := record("not-mine", other)

		// Once, on the adoption's read of the moved saga's log. Not
		// sync.Once: Wait may read the own saga's log through this same
		// store, and a Once re-entered from its own function deadlocks.
		var fired atomic.Bool
		store.afterRead = func(id uuid.UUID) {
			if id != moved || !fired.CompareAndSwap(false, true) {
				return
			}
			close(gate) // the adopter's own saga finishes meanwhile
			if _, err := e.Wait(waitCtx(t), own); err != nil {
				t.Error(err)
			}
		}
		adopted, err := e.Adopt(ctx, []uuid.UUID{moved, notMine})
		if err != nil || adopted != 1 {
			t.Fatalf("Adopt resumed %d saga(s) (%v); want the one moved", adopted, err)
		}
		if res, err := e.Wait(waitCtx(t), moved); err != nil || res.State != saga.StateDone {
			t.Fatalf("the adopted saga: %+v (%v)", res, err)
		}
		mu.Lock()
		got := map[string]int{"own": runs["own"], "moved": runs["moved"], "not-mine": runs["not-mine"]}
		mu.Unlock()
		if got["own"] != 1 || got["moved"] != 1 || got["not-mine"] != 0 {
			t.Fatalf("actions ran %v; want own and moved once each, not-mine never", got)
		}
		if rec, err := ds.SagaGet(ctx, notMine); err != nil || rec.State != saga.StateRunning || rec.Owner != other {
			t.Fatalf("the other replica's saga is %+v (%v)", rec, err)
		}
	})
}
