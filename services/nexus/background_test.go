package nexus_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

func activate(t *testing.T, n *nexus.Server, task string) {
	t.Helper()
	if err := n.Background().Activate(ctx, task); err != nil {
		t.Fatalf("activating %s: %v", task, err)
	}
}

// waitUpdated waits until no update holds the instance's updater lock: an
// instance reads failed as soon as its update saga wrote it, before the saga
// releases the lock, and reincarnation leaves locked instances to the
// update under way.
func waitUpdated(t *testing.T, n *nexus.Server, id uuid.UUID) {
	t.Helper()
	waitInstance(t, n, id, func(i model.Instance) error {
		if i.UpdaterID != nil {
			return fmt.Errorf("updater lock held by %s", i.UpdaterID)
		}
		return nil
	})
}

func runningInstance(t *testing.T, n *nexus.Server, c *oxide.Client) (model.Instance, model.VMM) {
	t.Helper()
	if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	created := createInstance(t, c, "p", "vm", true)
	waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
	inst, err := n.DataStore().InstanceGet(ctx, uuid.MustParse(created.Id))
	if err != nil {
		t.Fatal(err)
	}
	vmm, err := n.DataStore().VMMGet(ctx, *inst.Runtime.ActiveVMM)
	if err != nil {
		t.Fatal(err)
	}
	return inst, vmm
}

func TestN8_WatcherFailsAForgottenVMMAndReincarnationRestartsItOncePerCooldown(t *testing.T) {
	r := rack(t, racktest.Backends[0], 1)
	n, agents := r.Server(), r.Agents()
	c := r.Client(racktest.FleetAdmin).SDK(t)
	inst, vmm := runningInstance(t, n, c)
	if _, err := agents[0].Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: vmm.ID.String()}); err != nil {
		t.Fatal(err)
	}
	activate(t, n, nexus.TaskInstanceWatcher)
	failed, err := n.DataStore().VMMGet(ctx, vmm.ID)
	if err != nil || failed.Runtime.State != model.VMMFailed || failed.Runtime.FailureReason != "no_such_vmm" {
		t.Fatalf("VMM after the watcher: %+v, %v", failed.Runtime, err)
	}
	waitRunState(t, c, "p", "vm", oxide.InstanceStateFailed)
	waitUpdated(t, n, inst.ID)

	// The user wanted it running and its policy allows a restart.
	activate(t, n, nexus.TaskReincarnation)
	restarted := waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
	if restarted.TimeLastAutoRestarted == nil {
		t.Fatal("an automatic restart was not recorded")
	}

	// Failing again within the cooldown: no second restart.
	newVMM := agents[0].Inventory().GetVmms()[0].GetVmmId()
	if _, err := agents[0].Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: newVMM}); err != nil {
		t.Fatal(err)
	}
	activate(t, n, nexus.TaskInstanceWatcher)
	waitRunState(t, c, "p", "vm", oxide.InstanceStateFailed)
	waitUpdated(t, n, inst.ID)
	activate(t, n, nexus.TaskReincarnation)
	if got := waitRunState(t, c, "p", "vm", oxide.InstanceStateFailed); got == nil || len(agents[0].Inventory().GetVmms()) != 0 {
		t.Fatal("an instance was reincarnated twice within its cooldown")
	}
}

func TestN7_AnInstanceThatFailedDuringAStopIsNotReincarnated(t *testing.T) {
	r := rack(t, racktest.Backends[0], 1)
	n, agents := r.Server(), r.Agents()
	c := r.Client(racktest.FleetAdmin).SDK(t)
	_, vmm := runningInstance(t, n, c)
	if _, err := agents[0].Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: vmm.ID.String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"}); !errors.Is(err, oxide.ErrServiceUnavailable) {
		t.Fatalf("stop: %v, want 503", err)
	}
	waitRunState(t, c, "p", "vm", oxide.InstanceStateFailed)
	activate(t, n, nexus.TaskReincarnation)
	if got := waitRunState(t, c, "p", "vm", oxide.InstanceStateFailed); got.TimeLastAutoRestarted != nil {
		t.Fatal("an instance its user stopped was restarted")
	}
}

func TestN8_AnUnreachableSledIsInconclusive(t *testing.T) {
	r := rack(t, racktest.Backends[0], 1)
	n, agents := r.Server(), r.Agents()
	c := r.Client(racktest.FleetAdmin).SDK(t)
	_, vmm := runningInstance(t, n, c)
	if _, err := agents[0].Sim.SetBlackHole(ctx, &sledagentv1.SetBlackHoleRequest{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	shortCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	n.Background().Activate(shortCtx, nexus.TaskInstanceWatcher) //nolint:errcheck // the sled does not answer
	if got, _ := n.DataStore().VMMGet(ctx, vmm.ID); got.Runtime.State != model.VMMRunning {
		t.Fatalf("a VMM on an unreachable sled became %s", got.Runtime.State)
	}
	if _, err := agents[0].Sim.ClearVmmFaults(ctx, &sledagentv1.ClearVmmFaultsRequest{}); err != nil {
		t.Fatal(err)
	}
	waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
}

func TestN8_TheUpdaterBackstopsAnUpdateThatNeverRan(t *testing.T) {
	r := rack(t, racktest.Backends[0], 1)
	n := r.Server()
	c := r.Client(racktest.FleetAdmin).SDK(t)
	inst, vmm := runningInstance(t, n, c)
	// The VMM's end is recorded, but its update saga never ran (say nexus
	// died in between).
	if wrote, err := n.DataStore().VMMUpdateRuntime(ctx, vmm.ID, model.VMMRuntime{State: model.VMMDestroyed,
		Generation: vmm.Runtime.Generation + 100, TimeUpdated: time.Now()}); !wrote || err != nil {
		t.Fatalf("(%v, %v)", wrote, err)
	}
	if got, _ := n.DataStore().InstanceGet(ctx, inst.ID); got.Runtime.State != model.InstanceVMM {
		t.Fatalf("instance is %s before the updater ran", got.Runtime.State)
	}
	activate(t, n, nexus.TaskInstanceUpdater)
	testutil.WaitFor(t, 5*time.Second, func() error {
		got, _ := n.DataStore().InstanceGet(ctx, inst.ID)
		if got.Runtime.State != model.InstanceNoVMM || got.Runtime.ActiveVMM != nil || got.UpdaterID != nil {
			return fmt.Errorf("instance runtime %+v, updater %v", got.Runtime, got.UpdaterID)
		}
		return nil
	})
}

// X1: every background task is correct when two replicas run it at the same
// moment: the watcher marks a forgotten VMM failed once (one generation),
// the updater settles an instance once, and reincarnation restarts a failed
// instance once (one new VMM), however the two passes interleave.
func TestX1_BackgroundTasksRunByTwoReplicasAtOnceDoTheWorkOnce(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Backend: datastore.Postgres, Nexuses: 2, Sleds: 1})
	a, b, agent := r.InProcessNexus(0).Server(), r.InProcessNexus(1).Server(), r.Agents()[0]
	c := r.Client(racktest.FleetAdmin).SDK(t)
	both := func(task string) {
		t.Helper()
		var wg sync.WaitGroup
		for _, n := range []*nexus.Server{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.Background().Activate(ctx, task) //nolint:errcheck // a pass that lost a race reports it; the outcome is checked below
			}()
		}
		wg.Wait()
	}

	forgotten, vmm := runningInstance(t, a, c)
	if _, err := agent.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: vmm.ID.String()}); err != nil {
		t.Fatal(err)
	}
	both(nexus.TaskInstanceWatcher)
	if got, _ := a.DataStore().VMMGet(ctx, vmm.ID); got.Runtime.State != model.VMMFailed || got.Runtime.Generation != vmm.Runtime.Generation+1 {
		t.Fatalf("the forgotten VMM is %+v; want failed, written once (generation %d)", got.Runtime, vmm.Runtime.Generation+1)
	}
	waitRunState(t, c, "p", "vm", oxide.InstanceStateFailed)
	waitUpdated(t, a, forgotten.ID)

	both(nexus.TaskReincarnation)
	waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
	mine := 0
	for _, v := range agent.Inventory().GetVmms() {
		if v.GetInstanceId() == forgotten.ID.String() {
			mine++
		}
	}
	if mine != 1 {
		t.Fatalf("two reincarnations at once left %d VMMs of the instance on the sled, want 1", mine)
	}

	ended := createInstance(t, c, "p", "vm-2", true)
	waitRunState(t, c, "p", "vm-2", oxide.InstanceStateRunning)
	inst, err := a.DataStore().InstanceGet(ctx, uuid.MustParse(ended.Id))
	if err != nil {
		t.Fatal(err)
	}
	if wrote, err := a.DataStore().VMMUpdateRuntime(ctx, *inst.Runtime.ActiveVMM, model.VMMRuntime{State: model.VMMDestroyed,
		Generation: 1000, TimeUpdated: time.Now()}); !wrote || err != nil {
		t.Fatalf("(%v, %v)", wrote, err)
	}
	both(nexus.TaskInstanceUpdater)
	settled := waitInstance(t, a, inst.ID, func(i model.Instance) error {
		if i.Runtime.State != model.InstanceNoVMM || i.UpdaterID != nil {
			return fmt.Errorf("instance %+v, updater %v", i.Runtime, i.UpdaterID)
		}
		return nil
	})
	if settled.Runtime.Generation != inst.Runtime.Generation+1 {
		t.Fatalf("two updaters at once wrote the instance %d times, want once", settled.Runtime.Generation-inst.Runtime.Generation)
	}
}

// N8: the instance watcher asks sleds in parallel and a sled that does not
// answer costs the pass one round of calls, not one call timeout per VMM:
// while one sled black-holes every call, the other sled's forgotten VMM is
// found in the same pass, the dead sled is never asked about more than a
// few VMMs at once, and nothing of the dead sled's VMMs changes. Before,
// the pass asked the dead sled about each VMM in turn, 5 s apiece.
func TestN8_OneUnreachableSledCostsTheWatcherOneRoundOfCalls(t *testing.T) {
	// The test's pass is the only one: the periodic watcher would ask the
	// dead sled too.
	r := racktest.StartInProcess(t, racktest.Options{Sleds: 2,
		NexusConfig: func(_ int, c *config.Config) { c.InstanceWatcherPeriod = duration.Duration(time.Hour) }})
	n, agents := r.Server(), r.Agents()
	c := r.Client(racktest.FleetAdmin).SDK(t)
	if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	const instances = 16
	for i := range instances {
		createInstance(t, c, "p", fmt.Sprintf("vm-%d", i), true)
	}
	for i := range instances {
		waitRunState(t, c, "p", fmt.Sprintf("vm-%d", i), oxide.InstanceStateRunning)
	}
	vmms, err := n.DataStore().VMMListActive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dead, alive := agents[0], agents[1]
	var onDead []model.VMM
	var forgotten model.VMM
	for _, v := range vmms {
		if v.SledID.String() == dead.Config.SledID {
			onDead = append(onDead, v)
		} else {
			forgotten = v
		}
	}
	if len(onDead) <= 4 || forgotten.ID == uuid.Nil {
		t.Fatalf("placement put %d of %d VMMs on the first sled; the test needs more than 4 there and one elsewhere", len(onDead), len(vmms))
	}
	if _, err := alive.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: forgotten.ID.String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := dead.Sim.SetBlackHole(ctx, &sledagentv1.SetBlackHoleRequest{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	passed := make(chan error, 1)
	began := time.Now()
	go func() {
		_, err := n.App().WatchInstances(ctx)
		passed <- err
	}()
	asked := map[string]bool{}
	mostAtOnce := 0
	for done := false; !done; {
		select {
		case err := <-passed:
			if err != nil {
				t.Fatalf("the watcher pass: %v", err)
			}
			done = true
		case <-time.After(20 * time.Millisecond):
			// Only the watcher's questions: the inventory and zones
			// tasks call the dead sled too.
			atOnce := 0
			for _, h := range dead.RPCFaults().GetHeldCalls() {
				if h.GetMethod() == sledagentv1.SledAgent_GetVmmState_FullMethodName {
					asked[h.GetVmmId()] = true
					atOnce++
				}
			}
			mostAtOnce = max(mostAtOnce, atOnce)
		}
	}
	t.Logf("one watcher pass with %d VMMs on a dead sled and %d on a live one took %s", len(onDead), len(vmms)-len(onDead),
		time.Since(began).Round(time.Millisecond))
	if len(asked) > 4 || mostAtOnce > 4 {
		t.Errorf("the dead sled was asked about %d VMMs in one pass (%d at once), want at most 4: one round of calls", len(asked), mostAtOnce)
	}
	if got, _ := n.DataStore().VMMGet(ctx, forgotten.ID); got.Runtime.State != model.VMMFailed {
		t.Errorf("the other sled's forgotten VMM is %s after the pass, want failed", got.Runtime.State)
	}
	for _, v := range onDead {
		if got, _ := n.DataStore().VMMGet(ctx, v.ID); got.Runtime != v.Runtime {
			t.Errorf("VMM %s of the unreachable sled changed: %+v, was %+v", v.ID, got.Runtime, v.Runtime)
		}
	}
	if _, err := dead.Sim.ClearVmmFaults(ctx, &sledagentv1.ClearVmmFaultsRequest{}); err != nil {
		t.Fatal(err)
	}
}

// N13: a force-terminate whose sled did not answer records the wish and
// answers 503; nobody repeats it, yet once the sled answers again the stop
// wish is carried out and the instance reads stopped, not stopping for
// ever with its VM running.
func TestN13_AStopWishTheSledDidNotHearIsCarriedOutOnceItAnswers(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1,
				NexusConfig: func(_ int, c *config.Config) { c.SledUnreachableBound = duration.Duration(300 * time.Millisecond) }})
			n, agents := r.Server(), r.Agents()
			c := r.Client(racktest.FleetAdmin).SDK(t)
			_, vmm := runningInstance(t, n, c)
			blackHole(t, agents[0], true)
			code, _, eb := forceTerminate(t, n, r.Token(racktest.FleetAdmin), "vm", "p")
			if code != http.StatusServiceUnavailable {
				t.Fatalf("force-terminate of an instance on a black-holed sled: %d %+v, want 503", code, eb)
			}
			waitRunState(t, c, "p", "vm", oxide.InstanceStateStopping)
			if _, err := agents[0].Sim.ClearVmmFaults(ctx, &sledagentv1.ClearVmmFaultsRequest{}); err != nil {
				t.Fatal(err)
			}
			if got := agents[0].Inventory().GetVmms(); len(got) != 1 || got[0].GetRuntime().GetState() != sledagentv1.VmmState_VMM_STATE_RUNNING {
				t.Fatalf("the sled runs %v after the 503, want the VMM still running", got)
			}
			activate(t, n, nexus.TaskStopWishes)
			waitRunState(t, c, "p", "vm", oxide.InstanceStateStopped)
			if got, _ := n.DataStore().VMMGet(ctx, vmm.ID); !got.Runtime.State.Terminal() {
				t.Fatalf("the VMM is %s once the instance is stopped", got.Runtime.State)
			}
		})
	}
}
