package datastore_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

var ctx = context.Background()

// forEachBackend runs test against a fresh database of each backend: the
// one suite both backends must pass (N1).
func forEachBackend(t *testing.T, test func(t *testing.T, ds *datastore.DataStore)) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) { test(t, db.Open(t)) })
}

var now = time.Date(2026, 11, 21, 6, 0, 0, 123456789, time.UTC)

func fixture(t *testing.T, ds *datastore.DataStore) (model.Project, model.Sled) {
	t.Helper()
	p := model.Project{ID: uuid.New(), Name: "proj-" + uuid.NewString()[:8], Description: "d", TimeCreated: now}
	if err := ds.ProjectCreate(ctx, p); err != nil {
		t.Fatal(err)
	}
	s := model.Sled{ID: uuid.New(), Address: "127.0.0.1:1", NCPUs: 64, MemoryBytes: 512 << 30,
		Zpools: []string{"oxp_a"}, TimeLastSeen: now}
	if err := ds.SledUpsert(ctx, s); err != nil {
		t.Fatal(err)
	}
	return p, s
}

func newInstance(project uuid.UUID, name string) model.Instance {
	return model.Instance{ID: uuid.New(), ProjectID: project, Name: name, Description: "", Hostname: name,
		NCPUs: 2, MemoryBytes: 4 << 30,
		Runtime:       model.InstanceRuntime{State: model.InstanceNoVMM, Generation: 1, TimeUpdated: now},
		IntendedState: model.IntendStopped, AutoRestartPolicy: model.AutoRestartBestEffort, TimeCreated: now}
}

func TestN1_MigrationsApplyOnceAndReopeningChangesNothing(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		first := db.Open(t)
		v1, err := first.SchemaVersion(ctx)
		if err != nil || v1 < 1 {
			t.Fatalf("schema version %d, %v", v1, err)
		}
		p, _ := fixture(t, first)
		first.Close()
		again := db.Open(t)
		if v2, err := again.SchemaVersion(ctx); err != nil || v2 != v1 {
			t.Fatalf("reopened at version %d (%v), want %d", v2, err, v1)
		}
		if _, err := again.ProjectGet(ctx, p.ID); err != nil {
			t.Fatalf("data lost across reopen: %v", err)
		}
	})
}

func TestN2_StateVMMExactlyWhenThereIsAnActiveVMMIsAConstraint(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		p, _ := fixture(t, ds)
		vmmID := uuid.New()
		bad := newInstance(p.ID, "bad-1")
		bad.Runtime.State = model.InstanceVMM
		if err := ds.InstanceCreate(ctx, bad); !errors.Is(err, model.ErrConstraint) {
			t.Fatalf("state vmm without an active VMM: %v, want ErrConstraint", err)
		}
		bad = newInstance(p.ID, "bad-2")
		bad.Runtime.ActiveVMM = &vmmID
		if err := ds.InstanceCreate(ctx, bad); !errors.Is(err, model.ErrConstraint) {
			t.Fatalf("state no_vmm with an active VMM: %v, want ErrConstraint", err)
		}
		good := newInstance(p.ID, "good")
		if err := ds.InstanceCreate(ctx, good); err != nil {
			t.Fatal(err)
		}
		_, err := ds.InstanceUpdateRuntime(ctx, good.ID, model.InstanceRuntime{
			State: model.InstanceVMM, Generation: 2, TimeUpdated: now})
		if !errors.Is(err, model.ErrConstraint) {
			t.Fatalf("guarded update to vmm without an active VMM: %v, want ErrConstraint", err)
		}
		got, err := ds.InstanceGet(ctx, good.ID)
		if err != nil || got.Runtime.Generation != 1 || got.Runtime.State != model.InstanceNoVMM {
			t.Fatalf("a refused update changed the instance: %+v, %v", got.Runtime, err)
		}
	})
}

func TestN3_VMMUpdateRuntimeWrittenNotWrittenNotFound(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		p, s := fixture(t, ds)
		inst := newInstance(p.ID, "i")
		if err := ds.InstanceCreate(ctx, inst); err != nil {
			t.Fatal(err)
		}
		v := model.VMM{ID: uuid.New(), InstanceID: inst.ID, SledID: s.ID, TimeCreated: now,
			Runtime: model.VMMRuntime{State: model.VMMCreating, Generation: 1, TimeUpdated: now}}
		if err := ds.VMMInsert(ctx, v); err != nil {
			t.Fatal(err)
		}
		running := model.VMMRuntime{State: model.VMMRunning, Generation: 3, TimeUpdated: now.Add(time.Second)}
		if wrote, err := ds.VMMUpdateRuntime(ctx, v.ID, running); !wrote || err != nil {
			t.Fatalf("newer generation: (%v, %v), want written", wrote, err)
		}
		for _, stale := range []uint64{3, 2} {
			failed := model.VMMRuntime{State: model.VMMFailed, Generation: stale, TimeUpdated: now, FailureReason: "no_such_vmm"}
			if wrote, err := ds.VMMUpdateRuntime(ctx, v.ID, failed); wrote || err != nil {
				t.Fatalf("generation %d over 3: (%v, %v), want not written", stale, wrote, err)
			}
		}
		if _, err := ds.VMMUpdateRuntime(ctx, uuid.New(), running); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("unknown VMM: %v, want ErrNotFound", err)
		}
		got, err := ds.VMMGet(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Runtime.State != model.VMMRunning || got.Runtime.Generation != 3 || got.Runtime.FailureReason != "" ||
			!got.Runtime.TimeUpdated.Equal(now.Add(time.Second).Truncate(time.Microsecond)) {
			t.Fatalf("stored runtime %+v", got.Runtime)
		}
	})
}

func TestN3_RacingGuardedWritesOfOneGenerationHaveOneWinner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		p, s := fixture(t, ds)
		inst := newInstance(p.ID, "i")
		if err := ds.InstanceCreate(ctx, inst); err != nil {
			t.Fatal(err)
		}
		v := model.VMM{ID: uuid.New(), InstanceID: inst.ID, SledID: s.ID, TimeCreated: now,
			Runtime: model.VMMRuntime{State: model.VMMRunning, Generation: 1, TimeUpdated: now}}
		if err := ds.VMMInsert(ctx, v); err != nil {
			t.Fatal(err)
		}
		states := []model.VMMState{model.VMMDestroyed, model.VMMFailed, model.VMMStopping, model.VMMRebooting}
		var (
			mu      sync.Mutex
			winners []model.VMMState
			wg      sync.WaitGroup
		)
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := states[g%len(states)]
				wrote, err := ds.VMMUpdateRuntime(ctx, v.ID, model.VMMRuntime{State: st, Generation: 2, TimeUpdated: now})
				if err != nil {
					t.Error(err)
					return
				}
				if wrote {
					mu.Lock()
					winners = append(winners, st)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%d writers won generation 2, want exactly one", len(winners))
		}
		got, _ := ds.VMMGet(ctx, v.ID)
		if got.Runtime.State != winners[0] {
			t.Fatalf("stored %s, but the winner wrote %s", got.Runtime.State, winners[0])
		}
	})
}

func TestN3_InstanceUpdateRuntimeIsGuarded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		p, _ := fixture(t, ds)
		inst := newInstance(p.ID, "i")
		if err := ds.InstanceCreate(ctx, inst); err != nil {
			t.Fatal(err)
		}
		active, target, migration := uuid.New(), uuid.New(), uuid.New()
		next := model.InstanceRuntime{State: model.InstanceVMM, ActiveVMM: &active, TargetVMM: &target,
			MigrationID: &migration, Generation: 2, TimeUpdated: now}
		if wrote, err := ds.InstanceUpdateRuntime(ctx, inst.ID, next); !wrote || err != nil {
			t.Fatalf("(%v, %v), want written", wrote, err)
		}
		if wrote, err := ds.InstanceUpdateRuntime(ctx, inst.ID, model.InstanceRuntime{
			State: model.InstanceNoVMM, Generation: 2, TimeUpdated: now}); wrote || err != nil {
			t.Fatalf("same generation: (%v, %v), want not written", wrote, err)
		}
		if _, err := ds.InstanceUpdateRuntime(ctx, uuid.New(), next); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("unknown instance: %v, want ErrNotFound", err)
		}
		got, _ := ds.InstanceGet(ctx, inst.ID)
		if got.Runtime.State != model.InstanceVMM || *got.Runtime.ActiveVMM != active ||
			*got.Runtime.TargetVMM != target || *got.Runtime.MigrationID != migration {
			t.Fatalf("stored runtime %+v", got.Runtime)
		}
	})
}

func TestN2_NamesAreUniqueAmongLiveRecords(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		p, _ := fixture(t, ds)
		dup := model.Project{ID: uuid.New(), Name: p.Name, TimeCreated: now}
		if err := ds.ProjectCreate(ctx, dup); !errors.Is(err, model.ErrAlreadyExists) {
			t.Fatalf("duplicate project name: %v, want ErrAlreadyExists", err)
		}
		if err := ds.InstanceCreate(ctx, newInstance(p.ID, "web")); err != nil {
			t.Fatal(err)
		}
		if err := ds.InstanceCreate(ctx, newInstance(p.ID, "web")); !errors.Is(err, model.ErrAlreadyExists) {
			t.Fatalf("duplicate instance name: %v, want ErrAlreadyExists", err)
		}
		other := model.Project{ID: uuid.New(), Name: "other", TimeCreated: now}
		if err := ds.ProjectCreate(ctx, other); err != nil {
			t.Fatal(err)
		}
		if err := ds.InstanceCreate(ctx, newInstance(other.ID, "web")); err != nil {
			t.Fatalf("same name in another project: %v", err)
		}
		if err := ds.InstanceCreate(ctx, newInstance(uuid.New(), "orphan")); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("instance in a missing project: %v, want ErrNotFound", err)
		}
		if got, err := ds.ProjectLookup(ctx, "other"); err != nil || got.ID != other.ID {
			t.Fatalf("lookup by name: %+v, %v", got, err)
		}
	})
}

func TestV8_SledRegistrationAndHeartbeat(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		_, s := fixture(t, ds)
		stranger := uuid.New()
		later := now.Add(time.Minute)
		if unknown, err := ds.SledsSeen(ctx, map[uuid.UUID]time.Time{stranger: later, s.ID: later}); err != nil || len(unknown) != 1 || unknown[0] != stranger {
			t.Fatalf("heartbeats of a stranger and a known sled: unknown %v, %v; want only the stranger", unknown, err)
		}
		// A replica whose clock is behind does not move it back.
		if unknown, err := ds.SledsSeen(ctx, map[uuid.UUID]time.Time{s.ID: now}); err != nil || len(unknown) != 0 {
			t.Fatalf("an older heartbeat: unknown %v, %v", unknown, err)
		}
		if seen, err := ds.SledsLastSeen(ctx, []uuid.UUID{s.ID, stranger}); err != nil || len(seen) != 1 ||
			!seen[s.ID].Equal(later.Truncate(time.Microsecond)) {
			t.Fatalf("last seen: %v, %v; want %v for the sled alone", seen, err, later)
		}
		s.Address, s.TimeLastSeen = "127.0.0.1:2", later.Add(time.Minute)
		if err := ds.SledUpsert(ctx, s); err != nil {
			t.Fatal(err)
		}
		sleds, err := ds.SledList(ctx)
		if err != nil || len(sleds) != 1 {
			t.Fatalf("list: %v, %v", sleds, err)
		}
		got := sleds[0]
		if got.Address != "127.0.0.1:2" || !got.TimeLastSeen.Equal(s.TimeLastSeen.Truncate(time.Microsecond)) || got.Zpools[0] != "oxp_a" ||
			!got.TimeCreated.Equal(now.Truncate(time.Microsecond)) {
			t.Fatalf("re-registered sled %+v", got)
		}
	})
}

func TestN9_ProjectsListUpdateAndDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		for _, name := range []string{"charlie", "alpha", "bravo"} {
			if err := ds.ProjectCreate(ctx, model.Project{ID: uuid.New(), Name: name, TimeCreated: now}); err != nil {
				t.Fatal(err)
			}
		}
		first, err := ds.ProjectList(ctx, datastore.ByNameAscending, "", 2)
		if err != nil || len(first) != 2 || first[0].Name != "alpha" || first[1].Name != "bravo" {
			t.Fatalf("first page %+v, %v", first, err)
		}
		rest, err := ds.ProjectList(ctx, datastore.ByNameAscending, first[1].Name, 2)
		if err != nil || len(rest) != 1 || rest[0].Name != "charlie" {
			t.Fatalf("second page %+v, %v", rest, err)
		}
		renamed := "delta"
		p, err := ds.ProjectUpdate(ctx, rest[0].ID, &renamed, nil, now.Add(time.Hour))
		if err != nil || p.Name != "delta" || !p.TimeModified.After(p.TimeCreated) {
			t.Fatalf("update: %+v, %v", p, err)
		}
		taken := "alpha"
		if _, err := ds.ProjectUpdate(ctx, p.ID, &taken, nil, now); !errors.Is(err, model.ErrAlreadyExists) {
			t.Fatalf("rename onto a taken name: %v, want ErrAlreadyExists", err)
		}
		if err := ds.InstanceCreate(ctx, newInstance(p.ID, "web")); err != nil {
			t.Fatal(err)
		}
		if err := ds.ProjectDelete(ctx, p.ID, now); !errors.Is(err, model.ErrInUse) {
			t.Fatalf("deleting a project with an instance: %v, want ErrInUse", err)
		}
		if err := ds.ProjectDelete(ctx, first[0].ID, now); err != nil {
			t.Fatal(err)
		}
		if err := ds.ProjectDelete(ctx, first[0].ID, now); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("deleting twice: %v, want ErrNotFound", err)
		}
		if err := ds.ProjectCreate(ctx, model.Project{ID: uuid.New(), Name: "alpha", TimeCreated: now}); err != nil {
			t.Fatalf("a deleted project's name is free again: %v", err)
		}
	})
}

func TestN7_ConcurrentStartsNeverOvercommitASled(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		p, _ := fixture(t, ds) // one sled: 64 CPUs, 512 GiB
		var wg sync.WaitGroup
		var mu sync.Mutex
		placed, refused := 0, 0
		for k := 0; k < 12; k++ {
			inst := newInstance(p.ID, "i-"+uuid.NewString()[:8])
			inst.NCPUs = 16
			if err := ds.InstanceCreate(ctx, inst); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				v := model.VMM{ID: uuid.New(), InstanceID: inst.ID, TimeCreated: now,
					Runtime: model.VMMRuntime{State: model.VMMCreating, Generation: 1, TimeUpdated: now}}
				_, err := ds.VMMAllocate(ctx, v, 16, 4<<30, time.Since(now.Add(-time.Hour)))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					placed++
				case errors.Is(err, model.ErrNoCapacity):
					refused++
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if placed != 4 || refused != 8 {
			t.Fatalf("placed %d and refused %d VMMs of 16 CPUs on a 64-CPU sled, want 4 and 8", placed, refused)
		}
	})
}

// X1: replicas started together on an empty database all come up: the
// schema is migrated once, whichever opens first, and the others find it.
func TestX1_ReplicasOpeningAnEmptyDatabaseTogetherAllMigrateIt(t *testing.T) {
	const replicas, rounds = 5, 20
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			for round := range rounds {
				db := racktest.NewDatabase(t, backend)
				start := make(chan struct{})
				errs := make(chan error, replicas)
				for range replicas {
					go func() {
						<-start
						ds, err := datastore.Open(ctx, db.Backend, db.URL, zap.NewNop())
						if err == nil {
							_, err = ds.SchemaVersion(ctx)
							ds.Close()
						}
						errs <- err
					}()
				}
				close(start)
				for range replicas {
					if err := <-errs; err != nil {
						t.Fatalf("round %d: a replica could not open the new database: %v", round, err)
					}
				}
			}
		})
	}
}
