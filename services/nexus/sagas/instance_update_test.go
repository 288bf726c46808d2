package sagas_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

var ctx = context.Background()

// TestN6_AnUpdateThatFoundTheLockHeldIsNotLost stages the race: update A
// has settled the instance and is about to release its lock when the next
// VMM becomes terminal; update B finds the lock held and gives up. A must
// notice on release and settle the instance again.
func TestN6_AnUpdateThatFoundTheLockHeldIsNotLost(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		ds := db.Open(t)
		inst, vmm1 := instanceWithVMM(t, ds)

		// Update B fails at its lock node, so the first unlock is A's.
		atRelease, release := make(chan struct{}), make(chan struct{})
		var pauseOnce sync.Once
		replica := uuid.New()
		if _, err := ds.NexusRegister(ctx, model.NexusZone{ID: replica, InternalAddress: "127.0.0.1:1",
			ExternalAddress: "127.0.0.1:2", TimeCreated: time.Now()}); err != nil {
			t.Fatal(err)
		}
		engine := saga.New(ds, replica, zaptest.NewLogger(t), saga.WithHooks(saga.Hooks{
			BeforeNode: func(_ uuid.UUID, node string) {
				if node == "unlock" {
					pauseOnce.Do(func() {
						close(atRelease)
						<-release
					})
				}
			},
		}))
		for _, tmpl := range sagas.Templates(sagas.Deps{DS: ds, Replica: replica}) {
			if err := engine.Register(tmpl); err != nil {
				t.Fatal(err)
			}
		}
		defer engine.Shutdown(ctx) //nolint:errcheck // test teardown

		// VMM 1 ends; update A unlinks it and pauses before releasing.
		terminal(t, ds, vmm1)
		a, err := engine.Start(ctx, sagas.InstanceUpdate, sagas.InstanceUpdateParams{Instance: inst})
		if err != nil {
			t.Fatal(err)
		}
		<-atRelease
		// The instance starts again on VMM 2, which ends at once.
		vmm2 := relink(t, ds, inst)
		terminal(t, ds, vmm2)
		_, err = engine.Run(ctx, sagas.InstanceUpdate, sagas.InstanceUpdateParams{Instance: inst})
		if !errors.Is(err, model.ErrUpdaterLockHeld) {
			t.Fatalf("update B: %v, want ErrUpdaterLockHeld", err)
		}
		close(release)
		if _, err := engine.Wait(ctx, a); err != nil {
			t.Fatal(err)
		}
		got, err := ds.InstanceGet(ctx, inst)
		if err != nil || got.Runtime.State != model.InstanceNoVMM || got.Runtime.ActiveVMM != nil || got.UpdaterID != nil {
			t.Fatalf("instance after A released: %+v updater %v (%v); want no_vmm, unlocked", got.Runtime, got.UpdaterID, err)
		}
	})
}

func instanceWithVMM(t *testing.T, ds *datastore.DataStore) (uuid.UUID, uuid.UUID) {
	t.Helper()
	now := time.Now()
	p := model.Project{ID: uuid.New(), Name: "p", TimeCreated: now}
	s := model.Sled{ID: uuid.New(), Address: "127.0.0.1:1", NCPUs: 8, MemoryBytes: 64 << 30, TimeLastSeen: now}
	inst := model.Instance{ID: uuid.New(), ProjectID: p.ID, Name: "i", Hostname: "i", NCPUs: 1, MemoryBytes: 1 << 30,
		IntendedState: model.IntendRunning, AutoRestartPolicy: model.AutoRestartNever, TimeCreated: now,
		Runtime: model.InstanceRuntime{State: model.InstanceNoVMM, Generation: 1, TimeUpdated: now}}
	for _, err := range []error{ds.ProjectCreate(ctx, p), ds.SledUpsert(ctx, s), ds.InstanceCreate(ctx, inst)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return inst.ID, relink(t, ds, inst.ID)
}

// relink gives the instance a new running VMM, as a start saga would.
func relink(t *testing.T, ds *datastore.DataStore, instance uuid.UUID) uuid.UUID {
	t.Helper()
	inst, err := ds.InstanceGet(ctx, instance)
	if err != nil {
		t.Fatal(err)
	}
	sleds, err := ds.SledList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	v := model.VMM{ID: uuid.New(), InstanceID: instance, SledID: sleds[0].ID, TimeCreated: now,
		Runtime: model.VMMRuntime{State: model.VMMRunning, Generation: 1, TimeUpdated: now}}
	if err := ds.VMMInsert(ctx, v); err != nil {
		t.Fatal(err)
	}
	if wrote, err := ds.InstanceUpdateRuntime(ctx, instance, model.InstanceRuntime{State: model.InstanceVMM,
		ActiveVMM: &v.ID, Generation: inst.Runtime.Generation + 1, TimeUpdated: now}); !wrote || err != nil {
		t.Fatalf("relink: (%v, %v)", wrote, err)
	}
	return v.ID
}

func terminal(t *testing.T, ds *datastore.DataStore, vmm uuid.UUID) {
	t.Helper()
	if wrote, err := ds.VMMUpdateRuntime(ctx, vmm, model.VMMRuntime{State: model.VMMDestroyed,
		Generation: 10, TimeUpdated: time.Now()}); !wrote || err != nil {
		t.Fatalf("(%v, %v)", wrote, err)
	}
}
