package nexus_test

import (
	"google.golang.org/protobuf/types/known/durationpb"

	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

func migrate(t *testing.T, n *nexus.Server, token, instance, project, body string) (int, instanceJSON, racktest.Error) {
	t.Helper()
	path := "/v1/instances/" + instance + "/migrate"
	if project != "" {
		path += "?project=" + project
	}
	return instanceCall(t, racktest.NewClient(n.ExternalURL(), token).Call(t, http.MethodPost, path, body))
}

func mustMigrate(t *testing.T, n *nexus.Server, token string, to uuid.UUID) {
	t.Helper()
	code, inst, eb := migrate(t, n, token, "vm", "p", fmt.Sprintf(`{"dst_sled_id": %q}`, to))
	if code != http.StatusOK || inst.RunState != "migrating" {
		t.Fatalf("migrate: %d %+v %+v, want 200 migrating", code, inst, eb)
	}
}

// otherSled is the agent of the two that does not run vmm.
func otherSled(t *testing.T, agents []*sledagenttest.Agent, vmm model.VMM) *sledagenttest.Agent {
	t.Helper()
	for _, a := range agents {
		if a.Inventory().GetSledId() != vmm.SledID.String() {
			return a
		}
	}
	t.Fatal("no other sled")
	return nil
}

func sledID(a *sledagenttest.Agent) uuid.UUID { return uuid.MustParse(a.Inventory().GetSledId()) }

// waitInstance polls the instance record until check passes.
func waitInstance(t *testing.T, n *nexus.Server, id uuid.UUID, check func(model.Instance) error) model.Instance {
	t.Helper()
	var inst model.Instance
	testutil.WaitFor(t, 10*time.Second, func() error {
		var err error
		if inst, err = n.DataStore().InstanceGet(ctx, id); err != nil {
			return err
		}
		return check(inst)
	})
	return inst
}

func TestN6_MigrationMovesARunningInstanceToTheDestinationSled(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 2)
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			c := racktest.NewClient(n.ExternalURL(), token).SDK(t)
			inst, source := runningInstance(t, n, c)
			dst := otherSled(t, agents, source)
			// The sleds move on their own (auto mode): by the time the
			// answer is made the guest may have moved already, and then
			// the instance is running again, truthfully.
			code, answer, eb := migrate(t, n, token, "vm", "p", fmt.Sprintf(`{"dst_sled_id": %q}`, sledID(dst)))
			if code != http.StatusOK || (answer.RunState != "migrating" && answer.RunState != "running") {
				t.Fatalf("migrate: %d %+v %+v, want 200 migrating (or running, moved already)", code, answer, eb)
			}
			moved := waitInstance(t, n, inst.ID, func(i model.Instance) error {
				if i.Runtime.MigrationID != nil || i.Runtime.ActiveVMM == nil || *i.Runtime.ActiveVMM == source.ID {
					return fmt.Errorf("instance runtime %+v", i.Runtime)
				}
				return nil
			})
			waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
			target, _ := n.DataStore().VMMGet(ctx, *moved.Runtime.ActiveVMM)
			if target.SledID != sledID(dst) || moved.Runtime.TargetVMM != nil {
				t.Fatalf("after the migration the instance runs %+v on sled %s, want sled %s", moved.Runtime, target.SledID, sledID(dst))
			}
			testutil.WaitFor(t, 5*time.Second, func() error {
				if rt := vmmState(t, n, source.ID); rt.State != model.VMMDestroyed {
					return fmt.Errorf("source VMM is %s", rt.State)
				}
				if k := len(agentOf(t, agents, source.SledID).Inventory().GetVmms()); k != 0 {
					return fmt.Errorf("%d VMMs left on the source sled", k)
				}
				return nil
			})
			if vmms := dst.Inventory().GetVmms(); len(vmms) != 1 || vmms[0].GetVmmId() != target.ID.String() {
				t.Fatalf("destination sled runs %v", vmms)
			}
		})
	}
}

// F9, N7, R1: a migration that has not yet pointed the instance at its
// target when a stop records its wish gives way (409): the stop answered
// with the instance stopping, and it never shows migrating after that.
func TestN6_AMigrationGivesWayToAStopWishedBeforeItPointsTheInstanceAtItsTarget(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			block := newBlockAt("set_migration_ids")
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 2, NexusOptions: []nexus.Option{block.option()}})
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			c := racktest.NewClient(n.ExternalURL(), token).SDK(t)
			_, source := runningInstance(t, n, c)
			type answer struct {
				code int
				inst instanceJSON
			}
			migrated := make(chan answer, 1)
			go func() {
				resp := racktest.NewClient(n.ExternalURL(), token).Call(t, http.MethodPost, "/v1/instances/vm/migrate?project=p",
					fmt.Sprintf(`{"dst_sled_id": %q}`, sledID(otherSled(t, agents, source))))
				var inst instanceJSON
				resp.JSON(&inst) //nolint:errcheck // a refusal has no instance
				migrated <- answer{resp.Status, inst}
			}()
			<-block.reached
			stopped, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"})
			if err != nil || stopped.RunState != oxide.InstanceStateStopping && stopped.RunState != oxide.InstanceStateStopped {
				t.Fatalf("stop: %+v, %v", stopped, err)
			}
			close(block.release)
			if got := <-migrated; got.code != http.StatusConflict {
				t.Fatalf("the migration after the stop's wish answered %d %+v, want 409", got.code, got.inst)
			}
			if inst, err := c.InstanceView(ctx, oxide.InstanceViewParams{Project: "p", Instance: "vm"}); err != nil ||
				inst.RunState == oxide.InstanceStateMigrating {
				t.Fatalf("after the stop answered: %+v, %v", inst, err)
			}
			waitRunState(t, c, "p", "vm", oxide.InstanceStateStopped)
		})
	}
}

func TestN6_MigrateIsForFleetAdminsAndRefusesBadInputChangingNothing(t *testing.T) {
	r := rack(t, racktest.Backends[0], 2)
	n, agents := r.Server(), r.Agents()
	admin := r.Token(racktest.FleetAdmin)
	c := racktest.NewClient(n.ExternalURL(), admin).SDK(t)
	inst, source := runningInstance(t, n, c)
	dst := sledID(otherSled(t, agents, source))
	collaborator := r.InProcessNexus(0).Token("collab", app.Grant{Project: inst.ProjectID.String(), Role: "collaborator"})
	for _, tc := range []struct {
		token, body string
		code        int
		errorCode   string
		mentions    string
	}{
		{collaborator, fmt.Sprintf(`{"dst_sled_id": %q}`, dst), http.StatusForbidden, "Forbidden", "migrate"},
		{admin, `{"dst_sled_id": "not-a-uuid"}`, http.StatusBadRequest, "InvalidRequest", "dst_sled_id"},
		{admin, `{}`, http.StatusBadRequest, "InvalidRequest", "dst_sled_id"},
		{admin, `{"dst_sled_id": 7}`, http.StatusBadRequest, "InvalidRequest", ""},
		{admin, fmt.Sprintf(`{"dst_sled_id": %q}`, uuid.New()), http.StatusNotFound, "ObjectNotFound", "sled"},
		{admin, fmt.Sprintf(`{"dst_sled_id": %q}`, source.SledID), http.StatusBadRequest, "InvalidRequest", "already runs"},
	} {
		code, _, eb := migrate(t, n, tc.token, "vm", "p", tc.body)
		if code != tc.code || eb.ErrorCode != tc.errorCode || !strings.Contains(eb.Message, tc.mentions) {
			t.Errorf("migrate %s: %d %+v, want %d %s mentioning %q", tc.body, code, eb, tc.code, tc.errorCode, tc.mentions)
		}
	}
	after, _ := n.DataStore().InstanceGet(ctx, inst.ID)
	if after.Runtime.Generation != inst.Runtime.Generation || vmmsOnSleds(t, agents) != 1 {
		t.Fatalf("refused migrations changed something: %+v -> %+v", inst.Runtime, after.Runtime)
	}
	// A stopped instance cannot migrate.
	if _, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"}); err != nil {
		t.Fatal(err)
	}
	waitRunState(t, c, "p", "vm", oxide.InstanceStateStopped)
	if code, _, eb := migrate(t, n, admin, "vm", "p", fmt.Sprintf(`{"dst_sled_id": %q}`, dst)); code != http.StatusConflict {
		t.Fatalf("migrating a stopped instance: %d %+v, want 409", code, eb)
	}
}

// migratingInstance starts vm on one of two explicit-mode sleds and begins
// migrating it to the other; the target VMM is registered and asked to pull
// the guest, and nothing has moved yet.
func migratingInstance(t *testing.T, n *nexus.Server, token string, agents []*sledagenttest.Agent) (inst model.Instance, source, target model.VMM, src, dst *sledagenttest.Agent) {
	t.Helper()
	inst, source, src = startedInstance(t, n, racktest.NewClient(n.ExternalURL(), token).SDK(t), agents)
	dst = otherSled(t, agents, source)
	mustMigrate(t, n, token, sledID(dst))
	inst, _ = n.DataStore().InstanceGet(ctx, inst.ID)
	if inst.Runtime.TargetVMM == nil || inst.Runtime.MigrationID == nil {
		t.Fatalf("a migrating instance without migration ids: %+v", inst.Runtime)
	}
	target, _ = n.DataStore().VMMGet(ctx, *inst.Runtime.TargetVMM)
	if len(dst.Inventory().GetVmms()) != 1 {
		t.Fatal("the target VMM is not registered on the destination")
	}
	return inst, source, target, src, dst
}

func TestF3_ForceTerminateOfAMigratingInstanceEndsSourceAndTarget(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 2, explicitSleds)
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			inst, source, target, src, dst := migratingInstance(t, n, token, agents)
			// The target starts pulling: both sides are now migrating.
			dst.Step(target.ID.String(), false)
			src.Step(source.ID.String(), false)
			testutil.WaitFor(t, 5*time.Second, func() error {
				if rt := vmmState(t, n, source.ID); rt.State != model.VMMMigrating {
					return fmt.Errorf("source is %s", rt.State)
				}
				return nil
			})
			mustForceTerminate(t, n, token, "vm", "p", "stopped")
			for _, v := range []model.VMM{source, target} {
				if rt := vmmState(t, n, v.ID); rt.State != model.VMMDestroyed {
					t.Errorf("VMM %s is %s after force-terminate, want destroyed", v.ID, rt.State)
				}
			}
			if len(src.Inventory().GetVmms())+len(dst.Inventory().GetVmms()) != 0 {
				t.Fatal("VMMs left on the sleds")
			}
			got, _ := n.DataStore().InstanceGet(ctx, inst.ID)
			if got.Runtime.State != model.InstanceNoVMM || got.Runtime.MigrationID != nil || got.Runtime.TargetVMM != nil {
				t.Fatalf("instance after force-terminate: %+v", got.Runtime)
			}
		})
	}
}

// A migrating VMM cannot be stopped, so a stop that arrives mid-migration
// only records the wish; the update that resolves the migration stops the
// VMM the guest landed on, and the stop is never lost.
func TestN6_AStopDuringAMigrationStopsTheInstanceWhereverItLands(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 2, explicitSleds)
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			c := racktest.NewClient(n.ExternalURL(), token).SDK(t)
			inst, source, target, src, dst := migratingInstance(t, n, token, agents)
			stopped, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"})
			if err != nil {
				t.Fatal(err)
			}
			if stopped.RunState != oxide.InstanceStateMigrating {
				t.Fatalf("stop of a migrating instance answered %s, want migrating", stopped.RunState)
			}
			// The guest moves: let both sleds run their transitions.
			for _, a := range []*sledagenttest.Agent{src, dst} {
				if _, err := a.Sim.SetHypervisorMode(ctx, &sledagentv1.SetHypervisorModeRequest{
					Mode: sledagentv1.HypervisorMode_HYPERVISOR_MODE_AUTO, TransitionDelay: durationpb.New(time.Millisecond)}); err != nil {
					t.Fatal(err)
				}
			}
			waitRunState(t, c, "p", "vm", oxide.InstanceStateStopped)
			// The source's own end may still be on its way to nexus.
			testutil.WaitFor(t, 5*time.Second, func() error {
				for _, v := range []model.VMM{source, target} {
					if rt := vmmState(t, n, v.ID); !rt.State.Terminal() {
						return fmt.Errorf("VMM %s is %s once the instance stopped", v.ID, rt.State)
					}
				}
				if k := len(src.Inventory().GetVmms()) + len(dst.Inventory().GetVmms()); k != 0 {
					return fmt.Errorf("%d VMMs left on the sleds", k)
				}
				return nil
			})
			if got, _ := n.DataStore().InstanceGet(ctx, inst.ID); got.Runtime.State != model.InstanceNoVMM {
				t.Fatalf("instance %+v, want no_vmm", got.Runtime)
			}
		})
	}
}

func TestN6_AMigrationWhoseTargetFailsLeavesTheInstanceOnItsSource(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 2, explicitSleds)
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			inst, source, target, src, dst := migratingInstance(t, n, token, agents)
			if _, err := dst.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: target.ID.String()}); err != nil {
				t.Fatal(err)
			}
			activate(t, n, nexus.TaskInstanceWatcher)
			got := waitInstance(t, n, inst.ID, func(i model.Instance) error {
				if i.Runtime.MigrationID != nil || i.Runtime.ActiveVMM == nil || *i.Runtime.ActiveVMM != source.ID {
					return fmt.Errorf("instance runtime %+v", i.Runtime)
				}
				return nil
			})
			if got.Runtime.TargetVMM != nil || vmmState(t, n, target.ID).State != model.VMMFailed {
				t.Fatalf("instance %+v, target %+v", got.Runtime, vmmState(t, n, target.ID))
			}
			waitRunState(t, racktest.NewClient(n.ExternalURL(), token).SDK(t), "p", "vm", oxide.InstanceStateRunning)
			if len(src.Inventory().GetVmms()) != 1 {
				t.Fatal("the source VMM should still run")
			}
		})
	}
}

func TestN6_AMigrationWhoseSourceVanishesFailsTheInstance(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 2, explicitSleds)
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			inst, source, target, src, dst := migratingInstance(t, n, token, agents)
			if _, err := src.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: source.ID.String()}); err != nil {
				t.Fatal(err)
			}
			// The target cannot reach its source and fails.
			dst.Step(target.ID.String(), true)
			testutil.WaitFor(t, 5*time.Second, func() error {
				if rt := vmmState(t, n, target.ID); rt.State != model.VMMFailed {
					return fmt.Errorf("target is %s", rt.State)
				}
				return nil
			})
			// The watcher finds the source gone too.
			activate(t, n, nexus.TaskInstanceWatcher)
			waitInstance(t, n, inst.ID, func(i model.Instance) error {
				if i.Runtime.State != model.InstanceFailed || i.Runtime.MigrationID != nil || i.Runtime.TargetVMM != nil {
					return fmt.Errorf("instance runtime %+v", i.Runtime)
				}
				return nil
			})
			if vmmsOnSleds(t, agents) != 0 {
				t.Fatal("VMMs left on the sleds")
			}
		})
	}
}
