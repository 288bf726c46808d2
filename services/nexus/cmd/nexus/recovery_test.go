package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"
	"google.golang.org/grpc/codes"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

var bg = context.Background()

// Deadlines of the recovery test. Each is far above what a case needs (a
// whole case takes about a second); they only bound a failure.
const (
	processStartTimeout = 30 * time.Second
	crashTimeout        = 30 * time.Second
	settleTimeout       = 30 * time.Second
)

// TestN5_ARestartedNexusFinishesOrUnwindsAStartSagaKilledAtEachNode is SPEC
// N5 and section 7 for real: for each backend, each node of the instance
// start saga, before its action and after it, a nexus process started with
// --crash-point is killed with SIGKILL while a start saga stands exactly
// there, then restarted on the same addresses and database. The restarted
// nexus must finish or unwind the saga, leave no VMM on a sled that is not
// its instance's active VMM, and leave the instance running or stopped; an
// unwound instance must start again.
func TestN5_ARestartedNexusFinishesOrUnwindsAStartSagaKilledAtEachNode(t *testing.T) {
	var nodes []string
	for _, tmpl := range sagas.Templates(sagas.Deps{}) {
		if tmpl.Name == sagas.InstanceStart {
			for _, n := range tmpl.Nodes {
				nodes = append(nodes, n.Name)
			}
		}
	}
	if len(nodes) == 0 {
		t.Fatalf("no %s saga template", sagas.InstanceStart)
	}
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			// Each case has its own processes, ports, database and sleds,
			// so the two backends run side by side.
			t.Parallel()
			var seen []string
			for _, node := range nodes {
				for _, at := range []string{"before", "after"} {
					point := crashPoint{Template: sagas.InstanceStart, Node: node, After: at == "after"}
					t.Run(node+"-"+at, func(t *testing.T) {
						got := crashAndRecover(t, backend, point, nil)
						seen = append(seen, fmt.Sprintf("%-42s %s", point, got))
					})
				}
			}
			t.Logf("what a restarted nexus did with the start saga killed at each point (%s):\n  %s",
				backend, strings.Join(seen, "\n  "))
		})
	}
}

// TestN5_ARestartedNexusUnwindsAStartWhoseSledFailsTheVMMWhileItIsDown
// covers the other way out: the sled holding the saga's VMM goes wrong
// while nexus is dead (the next EnsureState fails, or the sled forgets the
// VMM as a sled-agent restart would), so the restarted nexus's retry of
// ensure_running fails and the saga must unwind: the VMM unregistered from
// the sled, the instance stopped, and a new start must succeed.
func TestN5_ARestartedNexusUnwindsAStartWhoseSledFailsTheVMMWhileItIsDown(t *testing.T) {
	faults := []*fault{
		{name: "ensure-state-fails", whileDown: func(t *testing.T, s racktest.Sled, vmm string) {
			if _, err := s.Agent().Sim.FailEnsureState(bg, &sledagentv1.FailEnsureStateRequest{VmmId: vmm, Count: 1,
				Code: uint32(codes.Unavailable), Message: "injected while nexus was down"}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "sled-forgot-vmm", whileDown: func(t *testing.T, s racktest.Sled, vmm string) {
			if _, err := s.Agent().Sim.ForgetVmm(bg, &sledagentv1.ForgetVmmRequest{VmmId: vmm}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			t.Parallel()
			for _, f := range faults {
				for _, at := range []string{"before", "after"} {
					point := crashPoint{Template: sagas.InstanceStart, Node: "ensure_running", After: at == "after"}
					t.Run(f.name+"-"+point.Node+"-"+at, func(t *testing.T) {
						if got := crashAndRecover(t, backend, point, f); !strings.HasPrefix(got, "unwound") {
							t.Fatalf("the saga %s; want it unwound", got)
						}
					})
				}
			}
		})
	}
}

// fault is something that goes wrong with the sled holding the saga's VMM
// around nexus's death.
type fault struct {
	name string
	// whileDown runs while nexus is dead.
	whileDown func(t *testing.T, s racktest.Sled, vmm string)
	// afterRestart, if set, runs once the restarted nexus listens.
	afterRestart func(t *testing.T, s racktest.Sled, ds *datastore.DataStore, sagaID uuid.UUID)
}

// crashAndRecover runs one case and describes its outcome. f, if not nil,
// is done to the sled holding the saga's VMM.
func crashAndRecover(t *testing.T, backend datastore.Backend, point crashPoint, f *fault) string {
	// The nexus starts armed: the saga started by the create stops at the
	// crash point, and the create request hangs until nexus dies. It
	// reaches each sled through a proxy the test can cut.
	r := newRack(t, racktest.StartProcesses(t, racktest.Options{Backend: backend, Sleds: 2, SledProxies: true,
		NexusFirstArgs: []string{"--" + crashPointFlag, point.String()}}))
	nexus := r.Nexus(0).(*racktest.ProcessNexus)
	if _, err := r.api.ProjectCreate(bg, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatalf("creating the project: %v", err)
	}
	created := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(bg, crashTimeout+processStartTimeout)
		defer cancel()
		start := true
		_, err := r.api.InstanceCreate(ctx, oxide.InstanceCreateParams{Project: "p", Body: &oxide.InstanceCreate{
			Name: "vm", Hostname: "vm", Memory: 4 << 30, Ncpus: 2, Start: &start}})
		created <- err
	}()
	line := nexus.WaitLog(crashPointMessage, crashTimeout, created)
	sagaID, err := uuid.Parse(fmt.Sprint(line["saga_id"]))
	if err != nil || line["node"] != point.Node {
		t.Fatalf("crash point line %v: want a saga id and node %s", line, point.Node)
	}
	nexus.Kill()
	<-created // the request dies with the process; its answer says nothing

	ds := r.DataStore()
	rec, err := ds.SagaGet(bg, sagaID)
	if err != nil || rec.State != saga.StateRunning || rec.Owner != nexus.ID() || rec.Template != sagas.InstanceStart {
		t.Fatalf("after the kill the saga is %+v (%v); want it running, owned by the dead nexus %s", rec, err, nexus.ID())
	}
	var params sagas.InstanceStartParams
	if err := json.Unmarshal(rec.Params, &params); err != nil {
		t.Fatal(err)
	}
	atKill := fmt.Sprintf("%d VMM(s) on the sleds", len(r.sledVMMs(t)))
	var faulty racktest.Sled
	if f != nil {
		// The sled the saga allocated (faults need a crash point after
		// alloc_vmm), whether or not it has the VMM yet.
		v, err := ds.VMMGet(bg, params.VMM)
		if err != nil {
			t.Fatalf("the saga's VMM %s: %v", params.VMM, err)
		}
		for _, s := range r.Sleds() {
			if s.ID() == v.SledID {
				faulty = s
			}
		}
		f.whileDown(t, faulty, params.VMM.String())
	}

	// The same nexus again, unarmed, on the same addresses and database.
	restarting := time.Now()
	nexus.Restart()
	listening := time.Since(restarting)
	if f != nil && f.afterRestart != nil {
		f.afterRestart(t, faulty, ds, sagaID)
	}
	testutil.WaitFor(t, settleTimeout, func() error {
		if rec, err = ds.SagaGet(bg, sagaID); err != nil {
			return err
		}
		if !rec.State.Finished() {
			return fmt.Errorf("saga %s is still %s", sagaID, rec.State)
		}
		return nil
	})
	finished := time.Since(restarting)
	if rec.State != saga.StateDone && rec.State != saga.StateUnwound {
		t.Fatalf("saga %s ended %s; want done or unwound\n%s", sagaID, rec.State, nexus.Log())
	}
	if left, err := ds.SagaListUnfinished(bg, nexus.ID()); err != nil || len(left) != 0 {
		t.Fatalf("sagas of the dead nexus left unfinished: %+v (%v)", left, err)
	}

	// The database and every sled agree, at once: the saga's last step
	// (registration or its undo) is synchronous.
	r.checkVMMs(t, ds)
	inst, err := ds.InstanceGet(bg, params.Instance)
	if err != nil {
		t.Fatal(err)
	}
	outcome := "completed"
	want := oxide.InstanceStateRunning
	if rec.State == saga.StateUnwound {
		outcome, want = "unwound", oxide.InstanceStateStopped
		if inst.Runtime.State != model.InstanceNoVMM || inst.Runtime.ActiveVMM != nil {
			t.Fatalf("unwound start left the instance %+v; want no_vmm without an active VMM", inst.Runtime)
		}
		if vmms := r.sledVMMs(t); len(vmms) != 0 {
			t.Fatalf("unwound start left VMMs on the sleds: %v", vmms)
		}
		if v, err := ds.VMMGet(bg, params.VMM); err == nil && v.Runtime.State != model.VMMSagaUnwound {
			t.Fatalf("unwound start left its VMM %s; want saga_unwound", v.Runtime.State)
		}
		events, err := ds.SagaEvents(bg, sagaID)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range events {
			if ev.Type == saga.EventFailed {
				outcome += fmt.Sprintf(" (%s failed: %s)", ev.Node, ev.Error)
			}
		}
	} else {
		if a := inst.Runtime.ActiveVMM; inst.Runtime.State != model.InstanceVMM || a == nil || *a != params.VMM {
			t.Fatalf("completed start left the instance %+v; want its VMM %s active", inst.Runtime, params.VMM)
		}
		v, err := ds.VMMGet(bg, params.VMM)
		if err != nil {
			t.Fatal(err)
		}
		if on := r.sledVMMs(t)[params.VMM.String()]; on != v.SledID.String() {
			t.Fatalf("the active VMM is on sled %q, the database says %s", on, v.SledID)
		}
	}
	// Not stuck: the state users see settles where the saga left it.
	r.waitRunState(t, want)

	if rec.State == saga.StateUnwound {
		// 503 says "try again": nexus's connection to a sled that was
		// just unreachable may still be backing off.
		testutil.WaitFor(t, settleTimeout, func() error {
			_, err := r.api.InstanceStart(bg, oxide.InstanceStartParams{Project: "p", Instance: "vm"})
			if err != nil && !errors.Is(err, oxide.ErrServiceUnavailable) {
				t.Fatalf("starting the instance again after the unwind: %v", err)
			}
			return err
		})
		r.waitRunState(t, oxide.InstanceStateRunning)
		r.checkVMMs(t, ds)
		if n := len(r.sledVMMs(t)); n != 1 {
			t.Fatalf("%d VMMs on the sleds of the restarted instance, want 1", n)
		}
	}

	// Sleds first, while nexus still takes what they publish; then nexus,
	// which must stop cleanly.
	for _, s := range r.Sleds() {
		s.Stop()
	}
	nexus.Stop()
	t.Logf("%s: saga %s %s after the restart (at the kill: %s; nexus listening %s and the saga finished %s after the restart)",
		point, sagaID, outcome, atKill, listening.Round(time.Millisecond), finished.Round(time.Millisecond))
	return outcome
}

// rack is one case's world: a rack of processes and an SDK client of its
// nexus as a fleet admin.
type rack struct {
	racktest.Rack
	api *oxide.Client
}

func newRack(t *testing.T, r racktest.Rack) *rack {
	return &rack{Rack: r, api: r.Client(racktest.FleetAdmin).SDK(t)}
}

// sledVMMs asks every sled-agent, over gRPC, which VMMs it has registered:
// VMM id → sled id.
func (r *rack) sledVMMs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range r.Sleds() {
		inv := s.Agent().Inventory()
		for _, v := range inv.GetVmms() {
			if other, dup := out[v.GetVmmId()]; dup {
				t.Fatalf("VMM %s is registered on sled %s and on sled %s", v.GetVmmId(), other, inv.GetSledId())
			}
			out[v.GetVmmId()] = inv.GetSledId()
		}
	}
	return out
}

// checkVMMs: every VMM a sled has registered is the active VMM of its
// instance in the database, on that very sled.
func (r *rack) checkVMMs(t *testing.T, ds *datastore.DataStore) {
	t.Helper()
	for _, s := range r.Sleds() {
		inv := s.Agent().Inventory()
		for _, v := range inv.GetVmms() {
			instID, err := uuid.Parse(v.GetInstanceId())
			if err != nil {
				t.Fatalf("sled %s: VMM %s of instance %q", inv.GetSledId(), v.GetVmmId(), v.GetInstanceId())
			}
			inst, err := ds.InstanceGet(bg, instID)
			if err != nil {
				t.Fatalf("sled %s has VMM %s of instance %s, which the database lacks: %v", inv.GetSledId(), v.GetVmmId(), instID, err)
			}
			if a := inst.Runtime.ActiveVMM; a == nil || a.String() != v.GetVmmId() {
				t.Fatalf("sled %s has VMM %s registered, but its instance's active VMM is %v (instance %+v)",
					inv.GetSledId(), v.GetVmmId(), a, inst.Runtime)
			}
			vmm, err := ds.VMMGet(bg, *inst.Runtime.ActiveVMM)
			if err != nil || vmm.SledID.String() != inv.GetSledId() {
				t.Fatalf("VMM %s is registered on sled %s; the database has %+v (%v)", v.GetVmmId(), inv.GetSledId(), vmm, err)
			}
		}
	}
}

// waitRunState polls the REST API until the instance's run_state is want;
// a run_state other than starting or stopping on the way fails at once.
func (r *rack) waitRunState(t *testing.T, want oxide.InstanceState) {
	t.Helper()
	testutil.WaitFor(t, settleTimeout, func() error {
		inst, err := r.api.InstanceView(bg, oxide.InstanceViewParams{Project: "p", Instance: "vm"})
		if err != nil {
			return err
		}
		switch inst.RunState {
		case want:
			return nil
		case oxide.InstanceStateStarting, oxide.InstanceStateStopping:
			return fmt.Errorf("instance is %s, waiting for %s", inst.RunState, want)
		}
		t.Fatalf("instance is %s, want %s", inst.RunState, want)
		return nil
	})
}
