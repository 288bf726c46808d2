package sagas_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	"github.com/rackplane/rackplane/services/racktest"
)

// The tests of this file prove every real saga template the way omicron's
// saga test helpers do (actions_succeed_idempotently,
// action_failure_can_unwind): on both backends, every action and every
// undo runs twice in a row (saga.WithRepeat), and
//
//   - once with no failure: the outcome is the one a single run gives;
//   - then, for each node, with an error injected just after that node's
//     action took effect (saga.WithInjectedErrors): the saga unwinds, every
//     undo twice, and leaves nothing registered on any sled and the
//     instance settled.

// settleBound bounds how long an instance takes to reach a state.
const settleBound = 30 * time.Second

var errInjected = errors.New("injected by the saga template test")

// injector is the engine's error injection, aimed by the test at one node
// of one template at a time.
type injector struct {
	mu             sync.Mutex
	template, node string
	hits           int
}

func (i *injector) aim(template, node string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.template, i.node, i.hits = template, node, 0
}

func (i *injector) inject(template, node string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if template == i.template && node == i.node {
		i.hits++
		return fmt.Errorf("after %s/%s: %w", template, node, errInjected)
	}
	return nil
}

func (i *injector) injected() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.hits
}

// templateRack is a rack whose saga engine repeats every step and injects
// the errors the test aims.
type templateRack struct {
	t      *testing.T
	rack   *racktest.InProcess
	api    *racktest.Client
	inject *injector
}

func newTemplateRack(t *testing.T, backend datastore.Backend, sleds int) *templateRack {
	t.Helper()
	inj := &injector{}
	r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: sleds,
		NexusOptions: []nexus.Option{nexus.WithSagaOptions(saga.WithRepeat(2), saga.WithInjectedErrors(inj.inject))}})
	tr := &templateRack{t: t, rack: r, api: r.Client(racktest.FleetAdmin), inject: inj}
	tr.api.MustCall(t, http.MethodPost, "/v1/projects", `{"name": "p", "description": ""}`, http.StatusCreated)
	return tr
}

// nodesOf lists a template's nodes.
func nodesOf(t *testing.T, template string) []string {
	t.Helper()
	for _, tmpl := range sagas.Templates(sagas.Deps{}) {
		if tmpl.Name == template {
			var out []string
			for _, n := range tmpl.Nodes {
				out = append(out, n.Name)
			}
			return out
		}
	}
	t.Fatalf("no saga template %s", template)
	return nil
}

// lastNode is a template's last node.
func lastNode(t *testing.T, template string) string {
	nodes := nodesOf(t, template)
	return nodes[len(nodes)-1]
}

// instance creates an instance named name, started or not, and waits until
// it settles running or stopped.
func (r *templateRack) instance(name string, start bool) uuid.UUID {
	r.t.Helper()
	var created struct {
		ID string `json:"id"`
	}
	resp := r.api.MustCall(r.t, http.MethodPost, "/v1/instances?project=p", fmt.Sprintf(
		`{"name": %q, "description": "", "hostname": %q, "ncpus": 1, "memory": 1073741824, "start": %t}`, name, name, start),
		http.StatusCreated)
	if err := resp.JSON(&created); err != nil {
		r.t.Fatal(err)
	}
	want := map[bool]string{true: "running", false: "stopped"}[start]
	r.waitRunState(name, want)
	return uuid.MustParse(created.ID)
}

func (r *templateRack) runState(name string) string {
	r.t.Helper()
	var inst struct {
		RunState string `json:"run_state"`
	}
	resp := r.api.Call(r.t, http.MethodGet, "/v1/instances/"+name+"?project=p", "")
	if resp.Status == http.StatusNotFound {
		return "gone"
	}
	if err := resp.JSON(&inst); err != nil {
		r.t.Fatal(err)
	}
	return inst.RunState
}

func (r *templateRack) waitRunState(name, want string) {
	r.t.Helper()
	testutil.WaitFor(r.t, settleBound, func() error {
		if got := r.runState(name); got != want {
			return fmt.Errorf("instance %s is %s, waiting for %s", name, got, want)
		}
		return nil
	})
}

// vmmsOf lists where the instance's VMMs are registered: VMM → sled.
func (r *templateRack) vmmsOf(instance uuid.UUID) map[string]uuid.UUID {
	r.t.Helper()
	out := map[string]uuid.UUID{}
	for _, s := range r.rack.Sleds() {
		for _, v := range s.Agent().Inventory().GetVmms() {
			if v.GetInstanceId() == instance.String() {
				out[v.GetVmmId()] = s.ID()
			}
		}
	}
	return out
}

// settled checks what every unwound saga must leave: the instance's
// runtime settled as its VMMs call for, its updater lock free, and every
// VMM it ever had either ended in the database or the one it runs on, on
// the sled the database says. A VMM registered on a sled that no instance
// points at is the leak N12 is about.
func (r *templateRack) settled(instance uuid.UUID) model.InstanceSnapshot {
	r.t.Helper()
	ds := r.rack.DataStore()
	var snap model.InstanceSnapshot
	testutil.WaitFor(r.t, settleBound, func() error {
		var err error
		if snap, err = ds.InstanceSnapshot(context.Background(), instance); err != nil {
			return err
		}
		if model.NeedsSettling(snap) || snap.Instance.UpdaterID != nil {
			return fmt.Errorf("instance %s is not settled: %+v, updater %v", instance, snap.Instance.Runtime, snap.Instance.UpdaterID)
		}
		for vmm, sled := range r.vmmsOf(instance) {
			if snap.Active == nil || snap.Active.ID.String() != vmm || snap.Active.SledID != sled {
				return fmt.Errorf("VMM %s is registered on sled %s, but the instance runs %v", vmm, sled, snap.Active)
			}
		}
		return nil
	})
	return snap
}

// unwound checks that the saga aimed at failed as injected: the call that
// ran it failed (when it waited for it), and the engine counts one more
// unwound saga.
func (r *templateRack) unwound(before int64, answer *racktest.Response) {
	r.t.Helper()
	if answer != nil && answer.Status < 400 {
		r.t.Fatalf("the call answered %d %s; want the injected failure", answer.Status, answer.Body)
	}
	testutil.WaitFor(r.t, settleBound, func() error {
		if r.inject.injected() == 0 {
			return errors.New("nothing was injected")
		}
		if got := r.rack.Server().Sagas().Stats().Unwound; got <= before {
			return fmt.Errorf("%d sagas unwound, waiting for one more than %d", got, before)
		}
		return nil
	})
}

func (r *templateRack) unwoundSoFar() int64 { return r.rack.Server().Sagas().Stats().Unwound }

// forEveryNode runs the template's scenario with no injection, then with
// an error injected after each node in turn.
func forEveryNode(t *testing.T, r *templateRack, template string, done func(name string), unwind func(node, name string)) {
	t.Run("idempotent", func(t *testing.T) {
		r.t = t
		r.inject.aim("", "")
		done("done")
	})
	for _, node := range nodesOf(t, template) {
		t.Run("unwind-after-"+node, func(t *testing.T) {
			r.t = t
			unwind(node, "after-"+strings.ReplaceAll(node, "_", "-"))
		})
	}
}

// TestN5_N7_TheInstanceStartSagaIsIdempotentAndUnwindsAfterEveryNode: a
// start that unwinds leaves no VMM on any sled, its VMM saga_unwound, the
// instance stopped, and the instance starts again.
func TestN5_N7_TheInstanceStartSagaIsIdempotentAndUnwindsAfterEveryNode(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := newTemplateRack(t, backend, 2)
			forEveryNode(t, r, sagas.InstanceStart, func(name string) {
				id := r.instance(name, false)
				r.api.MustCall(r.t, http.MethodPost, "/v1/instances/"+name+"/start?project=p", "", http.StatusAccepted)
				r.waitRunState(name, "running")
				snap := r.settled(id)
				if vmms := r.vmmsOf(id); len(vmms) != 1 || snap.Active == nil || vmms[snap.Active.ID.String()] != snap.Active.SledID {
					r.t.Fatalf("a start run with every step twice left VMMs %v for active %+v; want exactly the active one", vmms, snap.Active)
				}
			}, func(node, name string) {
				id := r.instance(name, false)
				before := r.unwoundSoFar()
				r.inject.aim(sagas.InstanceStart, node)
				answer := r.api.Call(r.t, http.MethodPost, "/v1/instances/"+name+"/start?project=p", "")
				r.unwound(before, &answer)
				r.inject.aim("", "")
				snap := r.settled(id)
				if got := r.runState(name); got != "stopped" || snap.Active != nil || len(r.vmmsOf(id)) != 0 {
					r.t.Fatalf("after the start unwound the instance is %s with VMMs %v; want stopped with none", got, r.vmmsOf(id))
				}
				r.api.MustCall(r.t, http.MethodPost, "/v1/instances/"+name+"/start?project=p", "", http.StatusAccepted)
				r.waitRunState(name, "running")
			})
		})
	}
}

// TestN6_TheInstanceUpdateSagaIsIdempotentAndUnwindsAfterEveryNode: the
// update that a stopped VMM starts unwinds with the updater lock released
// and the VMM gone from its sled; the background updater then settles the
// instance stopped.
func TestN6_TheInstanceUpdateSagaIsIdempotentAndUnwindsAfterEveryNode(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := newTemplateRack(t, backend, 1)
			forEveryNode(t, r, sagas.InstanceUpdate, func(name string) {
				id := r.instance(name, true)
				r.api.MustCall(r.t, http.MethodPost, "/v1/instances/"+name+"/stop?project=p", "", http.StatusAccepted)
				r.waitRunState(name, "stopped")
				if snap := r.settled(id); snap.Instance.Runtime.State != model.InstanceNoVMM {
					r.t.Fatalf("a stop settled the instance %s", snap.Instance.Runtime.State)
				}
			}, func(node, name string) {
				id := r.instance(name, true)
				before := r.unwoundSoFar()
				r.inject.aim(sagas.InstanceUpdate, node)
				r.api.MustCall(r.t, http.MethodPost, "/v1/instances/"+name+"/stop?project=p", "", http.StatusAccepted)
				r.unwound(before, nil)
				r.inject.aim("", "")
				testutil.WaitFor(r.t, settleBound, func() error {
					inst, err := r.rack.DataStore().InstanceGet(context.Background(), id)
					if err == nil && inst.UpdaterID != nil {
						err = fmt.Errorf("updater lock still held by %s", inst.UpdaterID)
					}
					if err == nil && len(r.vmmsOf(id)) != 0 {
						err = fmt.Errorf("VMMs left on the sleds: %v", r.vmmsOf(id))
					}
					return err
				})
				if err := r.rack.Server().Background().Activate(context.Background(), nexus.TaskInstanceUpdater); err != nil {
					r.t.Fatal(err)
				}
				r.waitRunState(name, "stopped")
				r.settled(id)
			})
		})
	}
}

// TestN7_TheInstanceMigrateSagaIsIdempotentAndUnwindsAfterEveryNode: a
// migration that unwinds leaves no target VMM on the destination, the
// target saga_unwound, and the instance running on its source, not
// migrating.
func TestN7_TheInstanceMigrateSagaIsIdempotentAndUnwindsAfterEveryNode(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := newTemplateRack(t, backend, 2)
			destination := func(id uuid.UUID) (model.VMM, uuid.UUID) {
				snap := r.settled(id)
				for _, s := range r.rack.Sleds() {
					if s.ID() != snap.Active.SledID {
						return *snap.Active, s.ID()
					}
				}
				r.t.Fatal("no other sled")
				return model.VMM{}, uuid.Nil
			}
			forEveryNode(t, r, sagas.InstanceMigrate, func(name string) {
				id := r.instance(name, true)
				_, dst := destination(id)
				r.api.MustCall(r.t, http.MethodPost, "/v1/instances/"+name+"/migrate?project=p",
					fmt.Sprintf(`{"dst_sled_id": %q}`, dst), http.StatusOK)
				testutil.WaitFor(r.t, settleBound, func() error {
					snap, err := r.rack.DataStore().InstanceSnapshot(context.Background(), id)
					if err == nil && (snap.Active == nil || snap.Active.SledID != dst || snap.Instance.Runtime.MigrationID != nil) {
						err = fmt.Errorf("not moved yet: %+v", snap.Instance.Runtime)
					}
					return err
				})
				r.waitRunState(name, "running")
				if vmms := r.vmmsOf(id); len(vmms) != 1 {
					r.t.Fatalf("after the migration VMMs %v; want the one on the destination", vmms)
				}
			}, func(node, name string) {
				id := r.instance(name, true)
				source, dst := destination(id)
				before := r.unwoundSoFar()
				r.inject.aim(sagas.InstanceMigrate, node)
				answer := r.api.Call(r.t, http.MethodPost, "/v1/instances/"+name+"/migrate?project=p",
					fmt.Sprintf(`{"dst_sled_id": %q}`, dst))
				r.unwound(before, &answer)
				r.inject.aim("", "")
				snap := r.settled(id)
				if snap.Instance.Runtime.MigrationID != nil || snap.Target != nil {
					r.t.Fatalf("after the migration unwound the instance still migrates: %+v", snap.Instance.Runtime)
				}
				if node == lastNode(r.t, sagas.InstanceMigrate) {
					// The error came after the target was told to pull: the
					// pull may have finished before the undo ended the
					// target, and the guest with it (services/nexus/README.md).
					// The source's report that it migrated out may still be
					// on its way, so wait for one of the two outcomes; nothing
					// may be left behind in either.
					testutil.WaitFor(r.t, settleBound, func() error {
						vmms := r.vmmsOf(id)
						switch state := r.runState(name); {
						case state == "stopped" && len(vmms) == 0:
							return nil
						case state == "running" && len(vmms) == 1 && vmms[source.ID.String()] == source.SledID:
							return nil
						default:
							return fmt.Errorf("after the migration unwound the instance is %s with VMMs %v", state, vmms)
						}
					})
					r.settled(id)
					return
				}
				if snap.Active == nil || snap.Active.ID != source.ID {
					r.t.Fatalf("after the migration unwound the instance is %+v; want it on its source %s",
						snap.Instance.Runtime, source.ID)
				}
				if vmms := r.vmmsOf(id); len(vmms) != 1 || vmms[source.ID.String()] != source.SledID {
					r.t.Fatalf("after the migration unwound VMMs %v; want only the source", vmms)
				}
				r.waitRunState(name, "running")
			})
		})
	}
}

// TestN7_TheInstanceDeleteSagaIsIdempotentAndUnwindsAfterEveryNode: the
// delete saga's one node is its commit point and has nothing to undo, so
// an instance whose delete failed after it is gone all the same, and one
// deleted with every step twice is gone once; either way nothing is left
// on the sleds.
func TestN7_TheInstanceDeleteSagaIsIdempotentAndUnwindsAfterEveryNode(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := newTemplateRack(t, backend, 1)
			forEveryNode(t, r, sagas.InstanceDelete, func(name string) {
				id := r.instance(name, false)
				r.api.MustCall(r.t, http.MethodDelete, "/v1/instances/"+name+"?project=p", "", http.StatusNoContent)
				if got := r.runState(name); got != "gone" || len(r.vmmsOf(id)) != 0 {
					r.t.Fatalf("a deleted instance is %s", got)
				}
			}, func(node, name string) {
				id := r.instance(name, false)
				before := r.unwoundSoFar()
				r.inject.aim(sagas.InstanceDelete, node)
				answer := r.api.Call(r.t, http.MethodDelete, "/v1/instances/"+name+"?project=p", "")
				r.unwound(before, &answer)
				r.inject.aim("", "")
				if got := r.runState(name); got != "gone" || len(r.vmmsOf(id)) != 0 {
					r.t.Fatalf("after a delete that failed past its commit point the instance is %s", got)
				}
			})
		})
	}
}
