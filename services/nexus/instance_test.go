package nexus_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"
	"google.golang.org/grpc/codes"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// rack starts an in-process rack over backend with n simulated sleds
// whose VMMs move on their own, adjusted by opts, once every sled has
// registered.
func rack(t *testing.T, backend datastore.Backend, sleds int, opts ...func(*sledconfig.Config)) *racktest.InProcess {
	t.Helper()
	return racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: sleds, SledConfig: racktest.EverySled(opts...)})
}

func waitRunState(t *testing.T, c *oxide.Client, project, name string, want oxide.InstanceState) *oxide.Instance {
	t.Helper()
	var inst *oxide.Instance
	testutil.WaitFor(t, 10*time.Second, func() error {
		var err error
		inst, err = c.InstanceView(ctx, oxide.InstanceViewParams{Project: oxide.NameOrId(project), Instance: oxide.NameOrId(name)})
		if err != nil {
			return err
		}
		if inst.RunState != want {
			return fmt.Errorf("instance %s is %s, waiting for %s", name, inst.RunState, want)
		}
		return nil
	})
	return inst
}

func vmmsOnSleds(t *testing.T, agents []*sledagenttest.Agent) int {
	total := 0
	for _, a := range agents {
		total += len(a.Inventory().GetVmms())
	}
	return total
}

func createInstance(t *testing.T, c *oxide.Client, project, name string, start bool) *oxide.Instance {
	t.Helper()
	inst, err := c.InstanceCreate(ctx, oxide.InstanceCreateParams{Project: oxide.NameOrId(project), Body: &oxide.InstanceCreate{
		Name: oxide.Name(name), Hostname: oxide.Hostname(name), Memory: 4 << 30, Ncpus: 2, Start: &start}})
	if err != nil {
		t.Fatalf("creating %s: %v", name, err)
	}
	return inst
}

func TestN7_TheOxideSDKRunsAnInstanceThroughItsLife(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 2)
			agents := r.Agents()
			c := r.Client(racktest.FleetAdmin).SDK(t)
			if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "web"}}); err != nil {
				t.Fatal(err)
			}
			created := createInstance(t, c, "web", "db-1", true)
			if created.RunState != oxide.InstanceStateStarting && created.RunState != oxide.InstanceStateRunning {
				t.Fatalf("created instance is %s, want starting or running", created.RunState)
			}
			if created.Memory != 4<<30 || created.Ncpus != 2 || created.AutoRestartEnabled == nil || !*created.AutoRestartEnabled {
				t.Fatalf("created %+v", created)
			}
			waitRunState(t, c, "web", "db-1", oxide.InstanceStateRunning)
			if vmmsOnSleds(t, agents) != 1 {
				t.Fatal("a running instance should have exactly one VMM on the sleds")
			}
			list, err := c.InstanceList(ctx, oxide.InstanceListParams{Project: "web"})
			if err != nil || len(list.Items) != 1 || list.Items[0].Id != created.Id {
				t.Fatalf("list: %+v, %v", list, err)
			}

			if _, err := c.InstanceReboot(ctx, oxide.InstanceRebootParams{Project: "web", Instance: "db-1"}); err != nil {
				t.Fatal(err)
			}
			waitRunState(t, c, "web", "db-1", oxide.InstanceStateRunning)

			stopping, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "web", Instance: "db-1"})
			if err != nil {
				t.Fatal(err)
			}
			if stopping.RunState == oxide.InstanceStateRunning {
				t.Fatalf("stop answered %s", stopping.RunState)
			}
			waitRunState(t, c, "web", "db-1", oxide.InstanceStateStopped)
			testutil.WaitFor(t, 5*time.Second, func() error {
				if k := vmmsOnSleds(t, agents); k != 0 {
					return fmt.Errorf("%d VMMs left on the sleds of a stopped instance", k)
				}
				return nil
			})
			again, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "web", Instance: "db-1"})
			if err != nil || again.RunState != oxide.InstanceStateStopped {
				t.Fatalf("stopping a stopped instance: %+v, %v", again, err)
			}

			if _, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Instance: oxide.NameOrId(created.Id)}); err != nil {
				t.Fatal(err)
			}
			waitRunState(t, c, "web", "db-1", oxide.InstanceStateRunning)
			err = c.InstanceDelete(ctx, oxide.InstanceDeleteParams{Project: "web", Instance: "db-1"})
			if !errors.Is(err, oxide.ErrInvalidRequest) {
				t.Fatalf("deleting a running instance: %v, want InvalidRequest", err)
			}
			if _, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "web", Instance: "db-1"}); err != nil {
				t.Fatal(err)
			}
			waitRunState(t, c, "web", "db-1", oxide.InstanceStateStopped)
			if err := c.InstanceDelete(ctx, oxide.InstanceDeleteParams{Project: "web", Instance: "db-1"}); err != nil {
				t.Fatal(err)
			}
			_, err = c.InstanceView(ctx, oxide.InstanceViewParams{Project: "web", Instance: "db-1"})
			if !errors.Is(err, oxide.ErrObjectNotFound) {
				t.Fatalf("deleted instance: %v, want ObjectNotFound", err)
			}
		})
	}
}

func TestN7_StartWithoutCapacityIsInsufficientCapacityAndLeavesNothing(t *testing.T) {
	r := rack(t, racktest.Backends[0], 1, func(c *sledconfig.Config) { c.MemoryGiB = 2 })
	agents := r.Agents()
	c := r.Client(racktest.FleetAdmin).SDK(t)
	if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	createInstance(t, c, "p", "big", false)
	_, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "big"})
	if !errors.Is(err, oxide.ErrInsufficientCapacity) || !errors.Is(err, oxide.ErrHTTP507) {
		t.Fatalf("start without capacity: %v, want 507 InsufficientCapacity", err)
	}
	if inst := waitRunState(t, c, "p", "big", oxide.InstanceStateStopped); inst == nil || vmmsOnSleds(t, agents) != 0 {
		t.Fatal("a start that could not place the instance left a VMM behind")
	}
}

// N7, SPEC 7: a create with start that cannot start (507: no sled has
// room; 503: its sled will not run the VMM) is one saga, which unwinds to
// nothing: no instance to view or list, no VMM on a sled, and the same
// request made again is not refused as ObjectAlreadyExists.
func TestN7_ACreateThatCannotStartLeavesNothingAndItsRetryIsNotRefusedAsExisting(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1, func(c *sledconfig.Config) { c.MemoryGiB = 6 })
			agent := r.Agents()[0]
			c := r.Client(racktest.FleetAdmin).SDK(t)
			if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
				t.Fatal(err)
			}
			create := func(name string, memory oxide.ByteCount) error {
				start := true
				_, err := c.InstanceCreate(ctx, oxide.InstanceCreateParams{Project: "p", Body: &oxide.InstanceCreate{
					Name: oxide.Name(name), Hostname: oxide.Hostname(name), Memory: memory, Ncpus: 2, Start: &start}})
				return err
			}
			gone := func(name string) {
				t.Helper()
				if _, err := c.InstanceView(ctx, oxide.InstanceViewParams{Project: "p", Instance: oxide.NameOrId(name)}); !errors.Is(err, oxide.ErrObjectNotFound) {
					t.Fatalf("viewing %s after its create failed: %v, want ObjectNotFound", name, err)
				}
				list, err := c.InstanceList(ctx, oxide.InstanceListParams{Project: "p"})
				if err != nil || len(list.Items) != 0 {
					t.Fatalf("instances after a failed create: %+v (%v), want none", list, err)
				}
				if n := vmmsOnSleds(t, []*sledagenttest.Agent{agent}); n != 0 {
					t.Fatalf("%d VMMs on the sled after a failed create", n)
				}
			}

			for try := range 2 {
				if err := create("big", 8<<30); !errors.Is(err, oxide.ErrInsufficientCapacity) || !errors.Is(err, oxide.ErrHTTP507) {
					t.Fatalf("create %d of an instance no sled has room for: %v, want 507 InsufficientCapacity", try+1, err)
				}
				gone("big")
			}

			if _, err := agent.Sim.FailEnsureState(ctx, &sledagentv1.FailEnsureStateRequest{Count: 1000,
				Code: uint32(codes.Unavailable), Message: "injected: the hypervisor is not answering"}); err != nil {
				t.Fatal(err)
			}
			if err := create("vm", 4<<30); !errors.Is(err, oxide.ErrServiceUnavailable) || !errors.Is(err, oxide.ErrHTTP503) {
				t.Fatalf("create of an instance its sled will not run: %v, want 503 ServiceNotAvailable", err)
			}
			gone("vm")
			if _, err := agent.Sim.ClearVmmFaults(ctx, &sledagentv1.ClearVmmFaultsRequest{}); err != nil {
				t.Fatal(err)
			}
			if err := create("vm", 4<<30); err != nil {
				t.Fatalf("the same create once the sled answers: %v", err)
			}
			waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
			// A name that is taken still is, and its failed create unwinds
			// nothing of the instance that has it.
			if err := create("vm", 4<<30); !errors.Is(err, oxide.ErrObjectAlreadyExists) {
				t.Fatalf("a create with a name taken: %v, want ObjectAlreadyExists", err)
			}
			waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
		})
	}
}

func TestN7_StopOfAVMMTheSledForgotFailsTheInstanceAndAnswers503(t *testing.T) {
	r := rack(t, racktest.Backends[0], 1)
	agents := r.Agents()
	c := r.Client(racktest.FleetAdmin).SDK(t)
	if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	createInstance(t, c, "p", "vm", true)
	waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
	vmmID := agents[0].Inventory().GetVmms()[0].GetVmmId()
	if _, err := agents[0].Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: vmmID}); err != nil {
		t.Fatal(err)
	}
	_, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"})
	if !errors.Is(err, oxide.ErrServiceUnavailable) || !errors.Is(err, oxide.ErrHTTP503) {
		t.Fatalf("stop of a forgotten VMM: %v, want 503 ServiceNotAvailable", err)
	}
	waitRunState(t, c, "p", "vm", oxide.InstanceStateFailed)
	// A failed instance can be stopped (in the database alone) and started.
	if inst, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"}); err != nil || inst.RunState != oxide.InstanceStateStopped {
		t.Fatalf("stopping the failed instance: %+v, %v", inst, err)
	}
	if _, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"}); err != nil {
		t.Fatal(err)
	}
	waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
}

func TestN9_BadInstanceInputIsRefusedByFieldAndCreatesNothing(t *testing.T) {
	r := rack(t, racktest.Backends[0], 1)
	n := r.Server()
	admin := r.Token(racktest.FleetAdmin)
	c := racktest.NewClient(n.ExternalURL(), admin).SDK(t)
	if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	base := n.ExternalURL() + "/v1/instances"
	for name, tc := range map[string]struct{ query, body, field string }{
		"zero cpus":         {"?project=p", `{"name":"a","hostname":"a","memory":4294967296,"ncpus":0}`, "ncpus"},
		"too many cpus":     {"?project=p", `{"name":"a","hostname":"a","memory":4294967296,"ncpus":255}`, "ncpus"},
		"no memory":         {"?project=p", `{"name":"a","hostname":"a","memory":0,"ncpus":1}`, "memory"},
		"half a GiB":        {"?project=p", `{"name":"a","hostname":"a","memory":1610612736,"ncpus":1}`, "memory"},
		"2 TiB":             {"?project=p", `{"name":"a","hostname":"a","memory":2199023255552,"ncpus":1}`, "memory"},
		"bad name":          {"?project=p", `{"name":"A_b","hostname":"a","memory":4294967296,"ncpus":1}`, "name"},
		"uuid name":         {"?project=p", `{"name":"8e5a0e6c-0b55-4d4e-9f6b-3a1c2d3e4f50","hostname":"a","memory":4294967296,"ncpus":1}`, "name"},
		"bad hostname":      {"?project=p", `{"name":"a","hostname":"-x","memory":4294967296,"ncpus":1}`, "hostname"},
		"unknown policy":    {"?project=p", `{"name":"a","hostname":"a","memory":4294967296,"ncpus":1,"auto_restart_policy":"always"}`, "auto_restart_policy"},
		"missing project":   {"", `{"name":"a","hostname":"a","memory":4294967296,"ncpus":1}`, "project"},
		"negative memory":   {"?project=p", `{"name":"a","hostname":"a","memory":-1,"ncpus":1}`, "memory"},
		"memory not number": {"?project=p", `{"name":"a","hostname":"a","memory":"lots","ncpus":1}`, "memory"},
	} {
		t.Run(name, func(t *testing.T) {
			resp := racktest.NewClient("", admin).Call(t, "POST", base+tc.query, tc.body)
			if resp.Status != http.StatusBadRequest || !containsAll(string(resp.Body), tc.field, "InvalidRequest") {
				t.Fatalf("%d %s, want 400 InvalidRequest naming %s", resp.Status, resp.Body, tc.field)
			}
		})
	}
	if list, err := c.InstanceList(ctx, oxide.InstanceListParams{Project: "p"}); err != nil || len(list.Items) != 0 {
		t.Fatalf("refused requests created instances: %+v, %v", list, err)
	}
	resp := racktest.NewClient("", admin).Call(t, "GET", base+"/some-name", "")
	if resp.Status != http.StatusBadRequest || !containsAll(string(resp.Body), "project") {
		t.Fatalf("instance by name without project: %d %s", resp.Status, resp.Body)
	}
}

func TestN10_ProjectViewersCannotOperateInstances(t *testing.T) {
	r := rack(t, racktest.Backends[0], 1)
	n := r.Server()
	admin := r.Client(racktest.FleetAdmin).SDK(t)
	if _, err := admin.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	createInstance(t, admin, "p", "vm", false)
	viewer := racktest.NewClient(n.ExternalURL(), r.InProcessNexus(0).Token("vic", app.Grant{Project: "p", Role: "viewer"})).SDK(t)
	collaborator := racktest.NewClient(n.ExternalURL(), r.InProcessNexus(0).Token("col", app.Grant{Project: "p", Role: "collaborator"})).SDK(t)
	if _, err := viewer.InstanceView(ctx, oxide.InstanceViewParams{Project: "p", Instance: "vm"}); err != nil {
		t.Fatalf("viewer reading: %v", err)
	}
	if _, err := viewer.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"}); !errors.Is(err, oxide.ErrForbidden) {
		t.Fatalf("viewer starting: %v, want Forbidden", err)
	}
	if _, err := collaborator.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"}); err != nil {
		t.Fatalf("collaborator starting: %v", err)
	}
	waitRunState(t, collaborator, "p", "vm", oxide.InstanceStateRunning)
}

// N7, F5: a stop that finds the active VMM already ended in the database
// (an unwound start or a force-terminate recorded its end, and the update
// that unlinks it has not run yet) does not ask its sled, which rightly no
// longer knows it: the VMM's recorded end stands, never turned into a
// failure, and the instance settles stopped. Found by the F9 stress test: a
// stop marked such a VMM failed over its saga_unwound.
func TestN7_AStopOfAVMMAlreadyEndedInTheDatabaseLeavesItsEndAsItIs(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1, explicitSleds)
			n, agents := r.Server(), r.Agents()
			c := r.Client(racktest.FleetAdmin).SDK(t)
			_, vmm, sled := startedInstance(t, n, c, agents)
			ended := model.VMMRuntime{State: model.VMMSagaUnwound, Generation: vmm.Runtime.Generation + 1, TimeUpdated: time.Now()}
			if wrote, err := n.DataStore().VMMUpdateRuntime(ctx, vmm.ID, ended); !wrote || err != nil {
				t.Fatalf("(%v, %v)", wrote, err)
			}
			if _, err := sled.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: vmm.ID.String()}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"}); err != nil {
				t.Fatalf("stopping an instance whose VMM has ended: %v", err)
			}
			if rt := vmmState(t, n, vmm.ID); rt.State != model.VMMSagaUnwound || rt.Generation != ended.Generation {
				t.Fatalf("the ended VMM is now %+v, want its end (saga_unwound, generation %d) as it was", rt, ended.Generation)
			}
			activate(t, n, nexus.TaskInstanceUpdater)
			waitRunState(t, c, "p", "vm", oxide.InstanceStateStopped)
		})
	}
}
