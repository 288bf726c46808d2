package datastore_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

// activeReplica records id as an active nexus replica: only one may
// create sagas (X3).
func activeReplica(t *testing.T, ds *datastore.DataStore, id uuid.UUID) uuid.UUID {
	t.Helper()
	if _, err := ds.NexusRegister(ctx, model.NexusZone{ID: id, InternalAddress: "127.0.0.1:1", ExternalAddress: "127.0.0.1:2",
		TimeCreated: now}); err != nil {
		t.Fatal(err)
	}
	return id
}

func newSagaRecord(owner uuid.UUID, state saga.State, created time.Time) saga.Record {
	return saga.Record{ID: uuid.New(), Template: "instance-start", Params: json.RawMessage(`{"instance":"i-1"}`),
		Owner: owner, State: state, TimeCreated: created, TimeStateChanged: created}
}

func TestN5_SagaRowRoundTrips(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		r := newSagaRecord(activeReplica(t, ds, uuid.New()), saga.StateRunning, now)
		if err := ds.SagaCreate(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := ds.SagaCreate(ctx, r); !errors.Is(err, model.ErrAlreadyExists) {
			t.Fatalf("second create: %v, want ErrAlreadyExists", err)
		}
		got, err := ds.SagaGet(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != r.ID || got.Template != r.Template || string(got.Params) != string(r.Params) || got.Owner != r.Owner ||
			got.State != r.State || !got.TimeCreated.Equal(now.Truncate(time.Microsecond)) {
			t.Fatalf("stored %+v, wrote %+v", got, r)
		}
		_, err = ds.SagaGet(ctx, uuid.New())
		if !errors.Is(err, model.ErrNotFound) || !errors.Is(err, saga.ErrNotFound) {
			t.Fatalf("unknown saga: %v, want both ErrNotFound", err)
		}
	})
}

func TestN5_AppendingAnEventTwiceKeepsTheFirst(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		r := newSagaRecord(activeReplica(t, ds, uuid.New()), saga.StateRunning, now)
		if err := ds.SagaCreate(ctx, r); err != nil {
			t.Fatal(err)
		}
		events := []saga.Event{
			{SagaID: r.ID, Node: "alloc", Type: saga.EventStarted, Time: now},
			{SagaID: r.ID, Node: "alloc", Type: saga.EventSucceeded, Output: json.RawMessage(`{"ip":"10.0.0.1"}`), Time: now},
			{SagaID: r.ID, Node: "alloc", Type: saga.EventSucceeded, Output: json.RawMessage(`{"ip":"10.0.0.2"}`), Time: now},
			{SagaID: r.ID, Node: "register", Type: saga.EventFailed, Error: "sled gone", Time: now.Add(time.Second)},
		}
		for _, e := range events {
			if err := ds.SagaAppendEvent(ctx, e); err != nil {
				t.Fatalf("appending %s %s: %v", e.Node, e.Type, err)
			}
		}
		got, err := ds.SagaEvents(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("%d events stored, want 3: %+v", len(got), got)
		}
		for _, e := range got {
			switch e.Type {
			case saga.EventSucceeded:
				if string(e.Output) != `{"ip":"10.0.0.1"}` {
					t.Errorf("a repeated append replaced the output: %s", e.Output)
				}
			case saga.EventFailed:
				if e.Error != "sled gone" || e.Output != nil || !e.Time.Equal(now.Add(time.Second).Truncate(time.Microsecond)) {
					t.Errorf("failed event %+v", e)
				}
			case saga.EventStarted:
				if e.Output != nil || e.Error != "" {
					t.Errorf("started event %+v", e)
				}
			}
		}
		orphan := saga.Event{SagaID: uuid.New(), Node: "alloc", Type: saga.EventStarted, Time: now}
		if err := ds.SagaAppendEvent(ctx, orphan); !errors.Is(err, model.ErrConstraint) {
			t.Fatalf("event of an unknown saga: %v, want ErrConstraint", err)
		}
	})
}

func TestN5_SagaStateMovesOnlyFromTheExpectedStateForItsOwner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		owner := activeReplica(t, ds, uuid.New())
		r := newSagaRecord(owner, saga.StateRunning, now)
		if err := ds.SagaCreate(ctx, r); err != nil {
			t.Fatal(err)
		}
		later := now.Add(time.Minute)
		for _, tc := range []struct {
			owner    uuid.UUID
			from, to saga.State
			want     bool
		}{
			{uuid.New(), saga.StateRunning, saga.StateUnwinding, false},
			{owner, saga.StateUnwinding, saga.StateUnwound, false},
			{owner, saga.StateRunning, saga.StateUnwinding, true},
			{owner, saga.StateRunning, saga.StateDone, false},
		} {
			wrote, err := ds.SagaUpdateState(ctx, r.ID, tc.owner, tc.from, tc.to, later)
			if err != nil || wrote != tc.want {
				t.Fatalf("%s -> %s by owner %v: (%v, %v), want %v", tc.from, tc.to, tc.owner == owner, wrote, err, tc.want)
			}
		}
		got, _ := ds.SagaGet(ctx, r.ID)
		if got.State != saga.StateUnwinding || !got.TimeStateChanged.Equal(later.Truncate(time.Microsecond)) {
			t.Fatalf("stored %s at %s", got.State, got.TimeStateChanged)
		}
		if _, err := ds.SagaUpdateState(ctx, uuid.New(), owner, saga.StateRunning, saga.StateDone, later); !errors.Is(err, saga.ErrNotFound) {
			t.Fatalf("unknown saga: %v, want saga.ErrNotFound", err)
		}
	})
}

func TestN5_UnfinishedSagasAreListedPerOwnerAndStuckOnesRackWide(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		mine, theirs := activeReplica(t, ds, uuid.New()), activeReplica(t, ds, uuid.New())
		var wantMine, wantStuck []uuid.UUID
		for i, tc := range []struct {
			owner uuid.UUID
			state saga.State
		}{
			{mine, saga.StateRunning}, {mine, saga.StateUnwinding}, {mine, saga.StateDone}, {mine, saga.StateUnwound},
			{mine, saga.StateStuck}, {theirs, saga.StateRunning}, {theirs, saga.StateStuck},
		} {
			r := newSagaRecord(tc.owner, tc.state, now.Add(time.Duration(i)*time.Second))
			if err := ds.SagaCreate(ctx, r); err != nil {
				t.Fatal(err)
			}
			if tc.owner == mine && !tc.state.Finished() {
				wantMine = append(wantMine, r.ID)
			}
			if tc.state == saga.StateStuck {
				wantStuck = append(wantStuck, r.ID)
			}
		}
		unfinished, err := ds.SagaListUnfinished(ctx, mine)
		if err != nil {
			t.Fatal(err)
		}
		if got := sagaIDs(unfinished); !slices.Equal(got, wantMine) {
			t.Fatalf("unfinished sagas of this nexus %v, want %v oldest first", got, wantMine)
		}
		stuck, err := ds.SagaListStuck(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := sagaIDs(stuck); !slices.Equal(got, wantStuck) {
			t.Fatalf("stuck sagas %v, want %v", got, wantStuck)
		}
		if n, err := ds.SagaCountStuck(ctx); err != nil || n != int64(len(wantStuck)) {
			t.Fatalf("stuck saga count %d, %v, want %d", n, err, len(wantStuck))
		}
	})
}

func TestN5_NoStuckSagasCountsZero(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		if err := ds.SagaCreate(ctx, newSagaRecord(activeReplica(t, ds, uuid.New()), saga.StateUnwound, now)); err != nil {
			t.Fatal(err)
		}
		if n, err := ds.SagaCountStuck(ctx); err != nil || n != 0 {
			t.Fatalf("stuck saga count %d, %v, want 0", n, err)
		}
	})
}

func sagaIDs(recs []saga.Record) []uuid.UUID {
	out := make([]uuid.UUID, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}
