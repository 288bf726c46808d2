package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"
	"google.golang.org/grpc/codes"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	"github.com/rackplane/rackplane/services/racktest"
)

// The kill -9 recovery of SPEC N5 and section 7 for the other sagas, as
// the start saga's (recovery_test.go): for each backend, each node, before
// its action and after it, the saga stands at a --crash-point when nexus is
// killed with SIGKILL and restarted unarmed on the same addresses and
// database; the restarted nexus must finish or unwind it, and the instance
// must settle where that outcome says, its updater lock free, every sled
// running only what the database runs, and stay usable.

// TestN5_ARestartedNexusFinishesOrUnwindsAnUpdateSagaKilledAtEachNode: the
// update saga (N6) that a stop starts once the VMM is destroyed. Whatever
// its outcome, the instance must end stopped (the user asked for it), not
// stuck stopping, with its VMM destroyed, and start again.
func TestN5_ARestartedNexusFinishesOrUnwindsAnUpdateSagaKilledAtEachNode(t *testing.T) {
	crashAtEveryPoint(t, updateScenario)
}

// updateScenario: a running instance is stopped through the API. The stop
// answers at once; its sled publishes the VMM's end, and that starts the
// update saga in the background. Starting the instance in setup runs no
// update saga (nothing became terminal).
var updateScenario = &crashScenario{
	template: sagas.InstanceUpdate,
	sleds:    1,
	setup:    (*crashCase).runningVM,
	trigger: func(ctx context.Context, c *crashCase) error {
		_, err := c.r.api.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"})
		return err
	},
	outcome: func(c *crashCase) string {
		t := c.t
		c.r.waitRunState(t, oxide.InstanceStateStopped)
		if inst := c.record(); inst.Runtime.State != model.InstanceNoVMM || inst.Runtime.ActiveVMM != nil ||
			inst.Runtime.TargetVMM != nil || inst.Runtime.MigrationID != nil {
			t.Fatalf("the stopped instance is %+v; want no_vmm, pointing at no VMM or migration", inst.Runtime)
		}
		if v, err := c.ds.VMMGet(bg, c.vmm.ID); err != nil || v.Runtime.State != model.VMMDestroyed {
			t.Fatalf("the stopped instance's VMM is %+v (%v); want it destroyed", v.Runtime, err)
		}
		c.waitSled(func(vmms map[string]string) error {
			if len(vmms) != 0 {
				return fmt.Errorf("VMMs on the sled of the stopped instance: %v", vmms)
			}
			return nil
		})
		return "stopped"
	},
	usable: (*crashCase).startVM,
}

// TestN5_ARestartedNexusFinishesOrUnwindsAMigrateSagaKilledAtEachNode: the
// migrate saga, from sled to sled. Done, the instance must end running on
// the destination sled's VMM, the source VMM destroyed and gone from its
// sled; unwound, running on the source as before, the target VMM
// saga_unwound (if it was allocated) and on no sled, unless the guest had
// already moved to the destination while nexus was dead: then it must stay
// there. Either way it must stop and start again.
func TestN5_ARestartedNexusFinishesOrUnwindsAMigrateSagaKilledAtEachNode(t *testing.T) {
	crashAtEveryPoint(t, migrateScenario)
}

// migrateScenario: a running instance is migrated to the other sled
// through the API (an extension the SDK lacks); the request waits for the
// saga.
var migrateScenario = &crashScenario{
	template:     sagas.InstanceMigrate,
	sleds:        2,
	setup:        (*crashCase).runningVM,
	requestWaits: true,
	trigger: func(ctx context.Context, c *crashCase) error {
		var dst uuid.UUID
		for _, s := range c.r.Sleds() {
			if s.ID() != c.vmm.SledID {
				dst = s.ID()
			}
		}
		resp, err := c.r.rest.Do(ctx, http.MethodPost, "/v1/instances/vm/migrate?project=p",
			fmt.Sprintf(`{"dst_sled_id": %q}`, dst))
		if err == nil {
			err = fmt.Errorf("migrate answered %d %s", resp.Status, resp.Body)
		}
		return err
	},
	faultVMM: func(c *crashCase) uuid.UUID {
		var params sagas.InstanceMigrateParams
		c.params(&params)
		return params.TargetVMM
	},
	outcome: func(c *crashCase) string {
		t, ds := c.t, c.ds
		var params sagas.InstanceMigrateParams
		c.params(&params)
		if params.DstSled == c.vmm.SledID {
			t.Fatalf("the saga migrates to sled %s, where the instance already runs", params.DstSled)
		}
		// A guest that moved to the destination while nexus was dead (the
		// sleds migrate on their own once told to) must stay there: even a
		// migration that unwinds must not stop the instance (section 7: a
		// request that fails changes nothing visible).
		moved := c.atRestart[params.TargetVMM.String()] == params.DstSled.String() && c.atRestart[c.vmm.ID.String()] == ""
		runs, on, where := params.TargetVMM, params.DstSled, "the destination"
		switch {
		case c.unwound() && moved:
			where = "the destination (where the guest had moved before the restart)"
		case c.unwound():
			runs, on, where = c.vmm.ID, c.vmm.SledID, "the source"
		}
		c.waitSled(func(vmms map[string]string) error {
			if len(vmms) != 1 || vmms[runs.String()] != on.String() {
				return fmt.Errorf("the sleds have VMMs %v; want only %s on %s sled %s", vmms, runs, where, on)
			}
			return nil
		})
		testutil.WaitFor(t, settleTimeout, func() error {
			inst, err := ds.InstanceGet(bg, c.instance)
			if err != nil {
				return err
			}
			rt := inst.Runtime
			if a := rt.ActiveVMM; rt.State != model.InstanceVMM || a == nil || *a != runs || rt.TargetVMM != nil || rt.MigrationID != nil {
				return fmt.Errorf("the instance is %+v; want it on %s VMM %s, migrating no more", rt, where, runs)
			}
			return nil
		})
		c.r.waitRunState(t, oxide.InstanceStateRunning)
		if runs == params.TargetVMM {
			testutil.WaitFor(t, settleTimeout, func() error {
				if v, err := ds.VMMGet(bg, c.vmm.ID); err != nil || v.Runtime.State != model.VMMDestroyed {
					return fmt.Errorf("the source VMM is %+v (%v); want it destroyed", v.Runtime, err)
				}
				return nil
			})
			if c.unwound() {
				return "running on the destination sled, where the guest had moved before the restart"
			}
			return "running on the destination sled"
		}
		v, err := ds.VMMGet(bg, params.TargetVMM)
		if err == nil && v.Runtime.State != model.VMMSagaUnwound {
			t.Fatalf("the unwound migration left its target VMM %s; want saga_unwound", v.Runtime.State)
		}
		if err != nil && !errors.Is(err, model.ErrNotFound) {
			t.Fatal(err)
		}
		return "running on the source sled"
	},
	usable: func(c *crashCase) {
		c.stopVM()
		c.startVM()
	},
}

// TestN5_AMigrateWhoseTargetSledFailsWhileNexusIsDownLeavesTheGuestRunning:
// nexus dies at ensure_target_migrating and, while it is dead, the
// destination sled is set to fail the next call about the target VMM, so
// the restarted nexus's retry of that node fails.
//
//   - before: the target was never told to migrate, so the saga must unwind:
//     the target unregistered and saga_unwound, the instance running on the
//     source as before.
//   - after: the target was told, and the sleds moved the guest while nexus
//     was dead (the source is destroyed). Whatever the saga's outcome, the
//     instance must keep running there, on the destination: unregistering
//     the target now would stop the instance, which no one asked for.
//
// Either way the instance must stop and start again.
func TestN5_AMigrateWhoseTargetSledFailsWhileNexusIsDownLeavesTheGuestRunning(t *testing.T) {
	fails := &fault{name: "ensure-state-fails", whileDown: func(t *testing.T, s racktest.Sled, vmm string) {
		if _, err := s.Agent().Sim.FailEnsureState(bg, &sledagentv1.FailEnsureStateRequest{VmmId: vmm, Count: 1,
			Code: uint32(codes.Unavailable), Message: "injected while nexus was down"}); err != nil {
			t.Fatal(err)
		}
	}}
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			t.Parallel()
			for _, at := range []string{"before", "after"} {
				point := crashPoint{Template: sagas.InstanceMigrate, Node: "ensure_target_migrating", After: at == "after"}
				t.Run(fails.name+"-"+point.Node+"-"+at, func(t *testing.T) {
					got := crashAndRecover(t, backend, migrateScenario, point, fails)
					if !point.After && !strings.HasPrefix(got, "unwound") {
						t.Fatalf("the saga %s; want it unwound", got)
					}
				})
			}
		})
	}
}

// TestN5_ARestartedNexusFinishesOrUnwindsADeleteSagaKilledAtEachNode: the
// delete saga of a stopped instance. Done, the instance is gone (404, its
// record deleted) and its name free again; unwound, it is still there,
// stopped, and starts.
func TestN5_ARestartedNexusFinishesOrUnwindsADeleteSagaKilledAtEachNode(t *testing.T) {
	crashAtEveryPoint(t, deleteScenario)
}

// deleteScenario: a stopped instance is deleted through the API; the
// request waits for the saga.
var deleteScenario = &crashScenario{
	template:     sagas.InstanceDelete,
	sleds:        1,
	setup:        func(c *crashCase) { c.instance = c.r.createVM(c.t) },
	requestWaits: true,
	trigger: func(ctx context.Context, c *crashCase) error {
		return c.r.api.InstanceDelete(ctx, oxide.InstanceDeleteParams{Project: "p", Instance: "vm"})
	},
	outcome: func(c *crashCase) string {
		t := c.t
		if c.unwound() {
			c.r.waitRunState(t, oxide.InstanceStateStopped)
			if inst := c.record(); inst.Runtime.State != model.InstanceNoVMM {
				t.Fatalf("the instance whose delete unwound is %+v; want no_vmm", inst.Runtime)
			}
			return "still there, stopped"
		}
		if _, err := c.r.api.InstanceView(bg, oxide.InstanceViewParams{Project: "p", Instance: "vm"}); !errors.Is(err, oxide.ErrObjectNotFound) {
			t.Fatalf("viewing the deleted instance: %v; want 404 ObjectNotFound", err)
		}
		if inst, err := c.ds.InstanceGet(bg, c.instance); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("the deleted instance's record is %+v (%v); want it deleted", inst, err)
		}
		c.gone = true
		return "deleted"
	},
	usable: func(c *crashCase) {
		if c.unwound() {
			c.startVM()
			return
		}
		// The name is free again.
		c.instance, c.gone = c.r.createVM(c.t), false
	},
}

// TestN5_ARestartedNexusFinishesOrUnwindsACreateSagaKilledAtEachNode: the
// create saga of an instance created with start (N7): its record inserted
// creating, then the start saga's nodes. Done, the instance runs on the
// saga's VMM; unwound, nothing is left (SPEC 7: a create with start that
// cannot start leaves no instance): no record, no VMM on any sled, the
// saga's VMM saga_unwound if it was allocated, and the same create made
// again succeeds and runs. Either way the instance then stops and starts.
func TestN5_ARestartedNexusFinishesOrUnwindsACreateSagaKilledAtEachNode(t *testing.T) {
	crashAtEveryPoint(t, createScenario)
}

// TestN5_ARestartedNexusUnwindsACreateWhoseSledFailsTheVMMWhileItIsDown:
// as for a start, the sled holding the create saga's VMM goes wrong while
// nexus is dead at ensure_running, so the saga must unwind, all the way to
// no instance, and the same create must then succeed.
func TestN5_ARestartedNexusUnwindsACreateWhoseSledFailsTheVMMWhileItIsDown(t *testing.T) {
	unwindsWhenTheSledFailsTheVMM(t, createScenario)
}

// createScenario: the instance is created with start through the API; the
// request waits for the saga. There is no setup: the trigger creates the
// instance.
var createScenario = &crashScenario{
	template:     sagas.InstanceCreate,
	sleds:        2,
	requestWaits: true,
	trigger: func(ctx context.Context, c *crashCase) error {
		_, err := c.r.instanceCreate(ctx, true)
		return err
	},
	faultVMM: startVMM,
	outcome: func(c *crashCase) string {
		t := c.t
		var params sagas.InstanceStartParams
		c.params(&params)
		if params.Create == nil || params.Create.ID != params.Instance {
			t.Fatalf("the create saga's parameters %+v; want the record of instance %s", params, params.Instance)
		}
		// The database and every sled agree, at once: the saga's last
		// step (ensure_running, or uncreating the instance) is synchronous.
		c.r.checkVMMs(t, c.ds)
		if !c.unwound() {
			return c.runsOn(params.VMM)
		}
		if _, err := c.r.api.InstanceView(bg, oxide.InstanceViewParams{Project: "p", Instance: "vm"}); !errors.Is(err, oxide.ErrObjectNotFound) {
			t.Fatalf("viewing the instance whose create unwound: %v; want 404 ObjectNotFound", err)
		}
		list, err := c.r.api.InstanceList(bg, oxide.InstanceListParams{Project: "p"})
		if err != nil || len(list.Items) != 0 {
			t.Fatalf("the project's instances after the create unwound: %+v (%v); want none", list, err)
		}
		if inst, err := c.ds.InstanceGet(bg, c.instance); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("the record of the instance whose create unwound is %+v (%v); want none", inst, err)
		}
		c.unwoundVMM(params.VMM)
		c.gone = true
		return "no instance"
	},
	usable: func(c *crashCase) {
		if c.unwound() {
			// The name is free again: the same create succeeds, and runs.
			c.createRunningVM()
		}
		c.stopVM()
		c.startVM()
	},
}
