package nexus_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"

	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// vmmsOn lists the VMMs a sled runs, by id.
func vmmsOn(a *sledagenttest.Agent) []string {
	var ids []string
	for _, v := range a.Inventory().GetVmms() {
		ids = append(ids, v.GetVmmId())
	}
	return ids
}

// N12: a VMM a sled runs that nexus does not know (no record, or an ended
// one) is unregistered by the orphan task, logged and counted; one nexus
// knows is left alone.
func TestN12_VMMsNexusDoesNotKnowAreUnregistered(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			n, agent := r.Server(), r.Agents()[0]
			c := r.Client(racktest.FleetAdmin).SDK(t)
			_, known := runningInstance(t, n, c)
			// One the sled runs with no record at all, and one whose
			// record ended (a start that unwound) while the sled kept it.
			agent.Register()
			unwound := agent.Register()
			if err := n.DataStore().VMMInsert(ctx, model.VMM{ID: uuid.MustParse(unwound), InstanceID: known.InstanceID,
				SledID: known.SledID, TimeCreated: time.Now(), Runtime: model.VMMRuntime{State: model.VMMSagaUnwound,
					Generation: 2, TimeUpdated: time.Now()}}); err != nil {
				t.Fatal(err)
			}
			for _, task := range []string{nexus.TaskInventory, nexus.TaskOrphanVMMs} {
				if err := n.Background().Activate(ctx, task); err != nil {
					t.Fatalf("%s: %v", task, err)
				}
			}
			if on := vmmsOn(agent); len(on) != 1 || on[0] != known.ID.String() {
				t.Fatalf("the sled runs %v; want only the VMM nexus knows (%s)", on, known.ID)
			}
			if got := metric(t, n, `nexus_events_total{event="orphan_vmm_reaped"}`); got != 2 {
				t.Fatalf("orphan_vmm_reaped counted %v, want 2", got)
			}
		})
	}
}

// N12 at its source: a start whose registration failed after the sled took
// the VMM (here, the database refuses to record the sled's answer) undoes
// the registration itself, so the sled runs nothing nexus does not know,
// without waiting for the orphan task.
func TestN12_ARegistrationThatFailsAfterTheSledTookItLeavesNothingRunning(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			agent := r.Agents()[0]
			api := r.Client(racktest.FleetAdmin)
			c := api.SDK(t)
			if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
				t.Fatal(err)
			}
			createInstance(t, c, "p", "vm", false)
			lift := r.Database().FailUpdates(t, "vmm", "NEW.state = 'starting'")
			resp := api.Call(t, http.MethodPost, "/v1/instances/vm/start?project=p", "")
			if resp.Status < 500 {
				t.Fatalf("a start whose registration could not be recorded: %d %s", resp.Status, resp.Body)
			}
			lift()
			if on := vmmsOn(agent); len(on) != 0 {
				t.Fatalf("the sled still runs %v after the start unwound", on)
			}
			waitRunState(t, c, "p", "vm", oxide.InstanceStateStopped)
			// And the instance is as usable as before.
			if _, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"}); err != nil {
				t.Fatal(err)
			}
			waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
		})
	}
}

// metric reads one sample of a replica's metrics (0 when absent).
func metric(t *testing.T, n *nexus.Server, sample string) float64 {
	t.Helper()
	body := string(racktest.NewClient("", "").MustCall(t, http.MethodGet, n.MetricsURL()+"/metrics", "", http.StatusOK).Body)
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}
