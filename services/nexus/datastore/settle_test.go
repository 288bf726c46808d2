package datastore_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
)

func settleAt(s model.InstanceSnapshot) (model.InstanceRuntime, bool) {
	return model.Settle(s, now.Add(time.Minute))
}

// runningOn creates an instance running VMM v (generation 3) and returns
// what force-terminate reads first: the instance with its VMM.
func runningOn(t *testing.T, ds *datastore.DataStore) model.InstanceSnapshot {
	t.Helper()
	p, s := fixture(t, ds)
	inst, _ := runningIn(t, ds, p, s, "i")
	from, err := ds.InstanceIntendStopped(ctx, inst.ID, datastore.ProjectScope{All: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	if from.Active == nil || from.Active.Runtime.Generation != 3 || from.Instance.Runtime.Generation != 2 {
		t.Fatalf("first look %+v", from)
	}
	return from
}

// runningIn creates an instance of p, meant to run, running a VMM on s:
// the VMM at generation 3, the instance at generation 2.
func runningIn(t *testing.T, ds *datastore.DataStore, p model.Project, s model.Sled, name string) (model.Instance, model.VMM) {
	t.Helper()
	inst := newInstance(p.ID, name)
	inst.IntendedState = model.IntendRunning
	if err := ds.InstanceCreate(ctx, inst); err != nil {
		t.Fatal(err)
	}
	v := model.VMM{ID: uuid.New(), InstanceID: inst.ID, SledID: s.ID, TimeCreated: now,
		Runtime: model.VMMRuntime{State: model.VMMCreating, Generation: 1, TimeUpdated: now}}
	if err := ds.VMMInsert(ctx, v); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.VMMUpdateRuntime(ctx, v.ID, model.VMMRuntime{State: model.VMMRunning, Generation: 3, TimeUpdated: now}); err != nil {
		t.Fatal(err)
	}
	if wrote, err := ds.InstanceUpdateRuntime(ctx, inst.ID, model.InstanceRuntime{State: model.InstanceVMM,
		ActiveVMM: &v.ID, Generation: 2, TimeUpdated: now}); !wrote || err != nil {
		t.Fatalf("linking the VMM: (%v, %v)", wrote, err)
	}
	return inst, v
}

func destroyedAt(from model.InstanceSnapshot, gen uint64) []model.VMMWrite {
	return []model.VMMWrite{{ID: from.Active.ID,
		Runtime: model.VMMRuntime{State: model.VMMDestroyed, Generation: gen, TimeUpdated: now.Add(time.Second)}}}
}

// F4, F6: the sled's answer and the settled instance are one commit; when
// either moved since the first look, the answer still goes through the VMM
// guard and the instance settles from what it is now, on both backends.
func TestF4_InstanceSettleFromWritesTheAnswerAndSettlesTheInstanceInOneCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		check := func(t *testing.T, from model.InstanceSnapshot, res datastore.SettleResult, vmmWritten bool, vmmGen, instGen uint64) {
			t.Helper()
			inst, err := ds.InstanceGet(ctx, from.Instance.ID)
			if err != nil {
				t.Fatal(err)
			}
			v, err := ds.VMMGet(ctx, from.Active.ID)
			if err != nil {
				t.Fatal(err)
			}
			if inst.Runtime.State != model.InstanceNoVMM || inst.Runtime.ActiveVMM != nil || inst.Runtime.Generation != instGen {
				t.Errorf("instance %+v, want no_vmm at generation %d", inst.Runtime, instGen)
			}
			if v.Runtime.State != model.VMMDestroyed || v.Runtime.Generation != vmmGen {
				t.Errorf("VMM %+v, want destroyed at generation %d", v.Runtime, vmmGen)
			}
			if len(res.VMMWritten) != 1 || res.VMMWritten[0] != vmmWritten {
				t.Errorf("VMMWritten %v, want [%v]", res.VMMWritten, vmmWritten)
			}
			if got := res.After.Instance.Runtime; got.State != inst.Runtime.State || got.Generation != inst.Runtime.Generation ||
				got.ActiveVMM != nil || res.After.Active != nil {
				t.Errorf("reported %+v, stored %+v", res.After.Instance.Runtime, inst.Runtime)
			}
		}
		t.Run("unchanged since the first look", func(t *testing.T) {
			from := runningOn(t, ds)
			res, err := ds.InstanceSettleFrom(ctx, from, destroyedAt(from, 4), settleAt)
			if err != nil || res.Outcome != datastore.SettleWritten {
				t.Fatalf("(%+v, %v)", res, err)
			}
			check(t, from, res, true, 4, 3)
		})
		t.Run("the VMM moved on", func(t *testing.T) {
			from := runningOn(t, ds)
			// A racing stop destroyed it first, at a later generation.
			if _, err := ds.VMMUpdateRuntime(ctx, from.Active.ID, destroyedAt(from, 6)[0].Runtime); err != nil {
				t.Fatal(err)
			}
			res, err := ds.InstanceSettleFrom(ctx, from, destroyedAt(from, 4), settleAt)
			if err != nil {
				t.Fatal(err)
			}
			check(t, from, res, false, 6, 3)
		})
		t.Run("the instance changed", func(t *testing.T) {
			from := runningOn(t, ds)
			// Another writer moved the instance on, still on its VMM.
			if wrote, err := ds.InstanceUpdateRuntime(ctx, from.Instance.ID, model.InstanceRuntime{State: model.InstanceVMM,
				ActiveVMM: &from.Active.ID, Generation: 5, TimeUpdated: now}); !wrote || err != nil {
				t.Fatalf("(%v, %v)", wrote, err)
			}
			res, err := ds.InstanceSettleFrom(ctx, from, destroyedAt(from, 4), settleAt)
			if err != nil {
				t.Fatal(err)
			}
			check(t, from, res, true, 4, 6)
		})
	})
}
