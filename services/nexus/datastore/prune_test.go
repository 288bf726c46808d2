package datastore_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

// historyRig records instances, VMMs, migrations and sagas with the times
// a test chooses, through the datastore's own writes.
type historyRig struct {
	ds      *datastore.DataStore
	project uuid.UUID
	sled    uuid.UUID
	replica uuid.UUID
}

func newHistoryRig(t *testing.T, ds *datastore.DataStore) *historyRig {
	t.Helper()
	p, s := fixture(t, ds)
	return &historyRig{ds: ds, project: p.ID, sled: s.ID, replica: activeReplica(t, ds, uuid.New())}
}

// instance creates an instance with runtime rt.
func (r *historyRig) instance(t *testing.T, name string, rt model.InstanceRuntime) model.Instance {
	t.Helper()
	i := newInstance(r.project, name)
	rt.Generation, rt.TimeUpdated = 1, now
	i.Runtime = rt
	if err := r.ds.InstanceCreate(ctx, i); err != nil {
		t.Fatal(err)
	}
	return i
}

// vmm records VMM id of inst, created at created, in state since at.
func (r *historyRig) vmm(t *testing.T, id, inst uuid.UUID, state model.VMMState, created, at time.Time) uuid.UUID {
	t.Helper()
	if err := r.ds.VMMInsert(ctx, model.VMM{ID: id, InstanceID: inst, SledID: r.sled, TimeCreated: created,
		Runtime: model.VMMRuntime{State: state, Generation: 2, TimeUpdated: at}}); err != nil {
		t.Fatal(err)
	}
	return id
}

// migration records a migration of inst from src to dst created at
// created, whose sides reached their states at at.
func (r *historyRig) migration(t *testing.T, id, inst, src, dst uuid.UUID, created time.Time,
	srcState, dstState model.MigrationState, at time.Time) uuid.UUID {
	t.Helper()
	if err := r.ds.MigrationInsert(ctx, model.Migration{ID: id, InstanceID: inst, SourceVMM: src, TargetVMM: dst,
		TimeCreated: created}); err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		vmm   uuid.UUID
		side  model.MigrationSide
		state model.MigrationState
	}{{src, model.MigrationSource, srcState}, {dst, model.MigrationTarget, dstState}} {
		if side.state == model.MigrationPending {
			continue
		}
		if wrote, err := r.ds.MigrationUpdateSide(ctx, side.vmm, id, side.side, side.state, 2, at); !wrote || err != nil {
			t.Fatalf("migration %s %s: (%v, %v)", id, side.side, wrote, err)
		}
	}
	return id
}

// saga records a saga created at created, in state since changed, with
// events node events.
func (r *historyRig) saga(t *testing.T, state saga.State, created, changed time.Time, events int) uuid.UUID {
	t.Helper()
	rec := newSagaRecord(r.replica, state, created)
	rec.TimeStateChanged = changed
	if err := r.ds.SagaCreate(ctx, rec); err != nil {
		t.Fatal(err)
	}
	for e := range events {
		if err := r.ds.SagaAppendEvent(ctx, saga.Event{SagaID: rec.ID, Node: fmt.Sprintf("node_%d", e),
			Type: saga.EventStarted, Time: created}); err != nil {
			t.Fatal(err)
		}
	}
	return rec.ID
}

// requireRows checks which of the rows of table exist.
func requireRows(t *testing.T, ds *datastore.DataStore, table string, want bool, ids ...uuid.UUID) {
	t.Helper()
	for _, id := range ids {
		if got, err := ds.RowExists(ctx, table, id); err != nil || got != want {
			t.Errorf("%s %s exists: %v (%v), want %v", table, id, got, err, want)
		}
	}
}

func prune(t *testing.T, ds *datastore.DataStore, cutoff time.Time) datastore.Pruned {
	t.Helper()
	p, err := ds.PruneHistory(ctx, cutoff)
	if err != nil {
		t.Fatalf("pruning: %v (after %+v)", err, p)
	}
	return p
}

func counts(p datastore.Pruned) [4]int64 {
	return [4]int64{p.Sagas, p.SagaEvents, p.VMMs, p.Migrations}
}

// N14: a pass deletes exactly the finished sagas (with their logs), ended
// VMMs and resolved migrations that ended before the cutoff and that
// nothing points at; everything young, live, unfinished or referenced
// stays. A sled's report about a pruned VMM or migration is a clean
// not-found, as for one nexus never knew. A second pass deletes nothing.
func TestN14_PruningDeletesExactlyTheOldFinishedUnreferencedHistory(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		r := newHistoryRig(t, ds)
		cutoff := now
		old, young := cutoff.Add(-30*24*time.Hour), cutoff.Add(time.Hour)

		stopped := r.instance(t, "stopped", model.InstanceRuntime{State: model.InstanceNoVMM})
		destroyed := r.vmm(t, uuid.New(), stopped.ID, model.VMMDestroyed, old, old)
		failed := r.vmm(t, uuid.New(), stopped.ID, model.VMMFailed, old, old)
		unwound := r.vmm(t, uuid.New(), stopped.ID, model.VMMSagaUnwound, old, old)
		endedYoung := r.vmm(t, uuid.New(), stopped.ID, model.VMMDestroyed, old, young)
		liveOld := r.vmm(t, uuid.New(), stopped.ID, model.VMMStarting, old, old)
		migratedOld := r.migration(t, uuid.New(), stopped.ID, destroyed, failed, old,
			model.MigrationCompleted, model.MigrationFailed, old)
		migratedYoung := r.migration(t, uuid.New(), stopped.ID, destroyed, unwound, old,
			model.MigrationFailed, model.MigrationFailed, young)
		// Ended VMMs an unresolved migration names, and the migration.
		namedSource, namedTarget := r.vmm(t, uuid.New(), stopped.ID, model.VMMDestroyed, old, old),
			r.vmm(t, uuid.New(), stopped.ID, model.VMMFailed, old, old)
		unresolved := r.migration(t, uuid.New(), stopped.ID, namedSource, namedTarget, old,
			model.MigrationCompleted, model.MigrationInProgress, old)

		// An instance still pointing at its ended VMMs and resolved
		// migration (it reads stopping until an update unlinks them).
		active, target, migration := uuid.New(), uuid.New(), uuid.New()
		pointing := r.instance(t, "pointing", model.InstanceRuntime{State: model.InstanceVMM, ActiveVMM: &active,
			TargetVMM: &target, MigrationID: &migration})
		r.vmm(t, active, pointing.ID, model.VMMDestroyed, old, old)
		r.vmm(t, target, pointing.ID, model.VMMFailed, old, old)
		r.migration(t, migration, pointing.ID, active, target, old, model.MigrationFailed, model.MigrationFailed, old)

		done, undone := r.saga(t, saga.StateDone, old, old, 3), r.saga(t, saga.StateUnwound, old, old, 2)
		doneYoung := r.saga(t, saga.StateDone, old, young, 2)
		// A finished saga whose id still holds an updater lock: the
		// operator's view of the lock names it.
		holding := r.saga(t, saga.StateDone, old, old, 1)
		if locked, err := ds.InstanceUpdaterLock(ctx, stopped.ID, holding, r.replica); !locked || err != nil {
			t.Fatalf("(%v, %v)", locked, err)
		}

		if got, want := counts(prune(t, ds, cutoff)), [4]int64{2, 5, 3, 1}; got != want {
			t.Fatalf("pruned sagas, events, VMMs, migrations %v; want %v", got, want)
		}
		requireRows(t, ds, "vmm", false, destroyed, failed, unwound)
		requireRows(t, ds, "vmm", true, endedYoung, liveOld, namedSource, namedTarget, active, target)
		requireRows(t, ds, "migration", false, migratedOld)
		requireRows(t, ds, "migration", true, migratedYoung, unresolved, migration)
		requireRows(t, ds, "saga", false, done, undone)
		requireRows(t, ds, "saga", true, doneYoung, holding)
		for _, id := range []uuid.UUID{done, undone} {
			if events, err := ds.SagaEvents(ctx, id); err != nil || len(events) != 0 {
				t.Errorf("saga %s's log: %d events (%v), want none", id, len(events), err)
			}
		}
		if events, err := ds.SagaEvents(ctx, doneYoung); err != nil || len(events) != 2 {
			t.Errorf("a kept saga's log: %d events (%v), want 2", len(events), err)
		}

		late := model.VMMRuntime{State: model.VMMDestroyed, Generation: 10, TimeUpdated: young}
		if _, err := ds.VMMReportRuntime(ctx, r.sled, destroyed, late); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("a sled's report of a pruned VMM: %v, want ErrNotFound", err)
		}
		if _, err := ds.MigrationUpdateSide(ctx, destroyed, migratedOld, model.MigrationSource, model.MigrationCompleted,
			10, young); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("a sled's report of a pruned migration: %v, want ErrNotFound", err)
		}
		if again := counts(prune(t, ds, cutoff)); again != [4]int64{} {
			t.Fatalf("a second pass pruned %v, want nothing", again)
		}
	})
}

// N14: no VMM or migration created since the oldest unfinished saga began
// (less a margin for the replicas' clocks) is pruned while that saga is
// running, unwinding or stuck: a node it runs again finds its work by id,
// and would otherwise create it again. Once the saga has finished, they
// go, and so does the saga when it is old enough.
func TestN14_PruningKeepsWhatAnUnfinishedSagaMayStillNeed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		r := newHistoryRig(t, ds)
		cutoff := now
		began := cutoff.Add(-20 * 24 * time.Hour)
		open := r.saga(t, saga.StateRunning, began, began, 2)
		inst := r.instance(t, "i", model.InstanceRuntime{State: model.InstanceNoVMM})
		before := r.vmm(t, uuid.New(), inst.ID, model.VMMDestroyed, began.Add(-2*time.Hour), began.Add(-2*time.Hour))
		withinMargin := r.vmm(t, uuid.New(), inst.ID, model.VMMSagaUnwound, began.Add(-30*time.Minute), began)
		after := r.vmm(t, uuid.New(), inst.ID, model.VMMSagaUnwound, began.Add(time.Minute), began.Add(2*time.Minute))
		migratedBefore := r.migration(t, uuid.New(), inst.ID, before, withinMargin, began.Add(-2*time.Hour),
			model.MigrationFailed, model.MigrationFailed, began.Add(-2*time.Hour))
		migratedAfter := r.migration(t, uuid.New(), inst.ID, before, after, began.Add(time.Minute),
			model.MigrationFailed, model.MigrationFailed, began.Add(2*time.Minute))

		p := prune(t, ds, cutoff)
		if got := counts(p); got != [4]int64{0, 0, 1, 1} {
			t.Fatalf("with a running saga: pruned %v; want only the VMM and migration created before it", got)
		}
		if p.OldestOpenSaga != open || !p.Horizon.Equal(began.Add(-time.Hour).Truncate(time.Microsecond)) {
			t.Fatalf("held back by %s until %s; want %s until an hour before it began", p.OldestOpenSaga, p.Horizon, open)
		}
		requireRows(t, ds, "vmm", false, before)
		requireRows(t, ds, "migration", false, migratedBefore)
		for _, step := range [][2]saga.State{{saga.StateRunning, saga.StateUnwinding}, {saga.StateUnwinding, saga.StateStuck}} {
			if ok, err := ds.SagaUpdateState(ctx, open, r.replica, step[0], step[1], began.Add(time.Hour)); !ok || err != nil {
				t.Fatalf("(%v, %v)", ok, err)
			}
			if got := counts(prune(t, ds, cutoff)); got != [4]int64{} {
				t.Fatalf("with a %s saga: pruned %v, want nothing", step[1], got)
			}
			requireRows(t, ds, "vmm", true, withinMargin, after)
			requireRows(t, ds, "migration", true, migratedAfter)
			requireRows(t, ds, "saga", true, open)
		}
		if ok, err := ds.SagaUpdateState(ctx, open, r.replica, saga.StateStuck, saga.StateUnwound, began.Add(2*time.Hour)); !ok || err != nil {
			t.Fatalf("(%v, %v)", ok, err)
		}
		if got := counts(prune(t, ds, cutoff)); got != [4]int64{1, 2, 2, 1} {
			t.Fatalf("once the saga finished: pruned %v, want it, its log and what it held back", got)
		}
	})
}

// N14: pruning changes nothing users see: every instance lists, reads and
// runs as before, whichever of its past VMMs and migrations went.
func TestN14_PrunedHistoryChangesNothingUsersSee(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		r := newHistoryRig(t, ds)
		cutoff := now
		old := cutoff.Add(-30 * 24 * time.Hour)
		// Each instance ran on VMMs before, long ended.
		past := func(inst uuid.UUID, n int) {
			var prev uuid.UUID
			for k := range n {
				v := r.vmm(t, uuid.New(), inst, []model.VMMState{model.VMMDestroyed, model.VMMFailed, model.VMMSagaUnwound}[k%3], old, old)
				if k > 0 {
					r.migration(t, uuid.New(), inst, prev, v, old, model.MigrationCompleted, model.MigrationCompleted, old)
				}
				prev = v
			}
		}
		running, endedActive, migSource, migTarget, migration := uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()
		for _, c := range []struct {
			name string
			rt   model.InstanceRuntime
		}{
			{"running", model.InstanceRuntime{State: model.InstanceVMM, ActiveVMM: &running}},
			{"stopped", model.InstanceRuntime{State: model.InstanceNoVMM}},
			{"failed", model.InstanceRuntime{State: model.InstanceFailed}},
			{"stopping", model.InstanceRuntime{State: model.InstanceVMM, ActiveVMM: &endedActive}},
			{"migrating", model.InstanceRuntime{State: model.InstanceVMM, ActiveVMM: &migSource, TargetVMM: &migTarget,
				MigrationID: &migration}},
		} {
			inst := r.instance(t, c.name, c.rt)
			past(inst.ID, 4)
			switch c.name {
			case "running":
				r.vmm(t, running, inst.ID, model.VMMRunning, old, old)
			case "stopping":
				r.vmm(t, endedActive, inst.ID, model.VMMDestroyed, old, old)
			case "migrating":
				r.vmm(t, migSource, inst.ID, model.VMMMigrating, old, old)
				r.vmm(t, migTarget, inst.ID, model.VMMMigrating, old, old)
				r.migration(t, migration, inst.ID, migSource, migTarget, old, model.MigrationInProgress, model.MigrationInProgress, old)
			}
		}
		seen := func() map[string]any {
			t.Helper()
			list, err := ds.InstanceList(ctx, r.project, datastore.ByNameAscending, "", 100)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]any{"list": list}
			for _, i := range list {
				s, err := ds.InstanceSnapshot(ctx, i.ID)
				if err != nil {
					t.Fatal(err)
				}
				out[i.Name] = []any{s, s.RunState()}
			}
			return out
		}
		before := seen()
		if p := prune(t, ds, cutoff); p.VMMs != 5*4 || p.Migrations != 5*3 {
			t.Fatalf("pruned %d VMMs and %d migrations, want every past one (20, 15)", p.VMMs, p.Migrations)
		}
		if after := seen(); !reflect.DeepEqual(before, after) {
			t.Fatalf("users saw\n%+v\nbefore pruning, and\n%+v\nafter", before, after)
		}
		if got := before["stopping"].([]any)[1]; got != "stopping" {
			t.Fatalf("an instance whose active VMM ended reads %v, want stopping", got)
		}
	})
}
