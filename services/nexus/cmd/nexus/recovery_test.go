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
	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

var bg = context.Background()

// Deadlines of the recovery tests. Each is far above what a case needs (a
// whole case takes a second or two); they only bound a failure.
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
	crashAtEveryPoint(t, startScenario)
}

// startScenario: an instance created stopped is started through the API
// (so that the saga is instance-start whatever a create with start runs);
// the start request waits for the saga, so it hangs until nexus dies.
var startScenario = &crashScenario{
	template:     sagas.InstanceStart,
	sleds:        2,
	setup:        func(c *crashCase) { c.instance = c.r.createVM(c.t) },
	requestWaits: true,
	trigger: func(ctx context.Context, c *crashCase) error {
		_, err := c.r.api.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"})
		return err
	},
	faultVMM: startVMM,
	outcome:  startOutcome,
	usable: func(c *crashCase) {
		if c.unwound() {
			c.startVM()
		}
	},
}

// startVMM is the VMM of a start saga's (or create saga's) parameters.
func startVMM(c *crashCase) uuid.UUID {
	var params sagas.InstanceStartParams
	c.params(&params)
	return params.VMM
}

// startOutcome: a completed start left the instance running on the saga's
// VMM; an unwound one left it stopped, with nothing on any sled.
func startOutcome(c *crashCase) string {
	var params sagas.InstanceStartParams
	c.params(&params)
	// The database and every sled agree, at once: the saga's last step
	// (registration or its undo) is synchronous.
	c.r.checkVMMs(c.t, c.ds)
	if !c.unwound() {
		return c.runsOn(params.VMM)
	}
	if inst := c.record(); inst.Runtime.State != model.InstanceNoVMM || inst.Runtime.ActiveVMM != nil {
		c.t.Fatalf("unwound start left the instance %+v; want no_vmm without an active VMM", inst.Runtime)
	}
	c.unwoundVMM(params.VMM)
	// Not stuck: the state users see settles where the saga left it.
	c.r.waitRunState(c.t, oxide.InstanceStateStopped)
	return "stopped"
}

// runsOn checks that the completed saga left the instance running on vmm,
// the VMM of its parameters, on the sled the database places it on, and
// describes it.
func (c *crashCase) runsOn(vmm uuid.UUID) string {
	t := c.t
	t.Helper()
	if inst := c.record(); inst.Runtime.State != model.InstanceVMM || inst.Runtime.ActiveVMM == nil || *inst.Runtime.ActiveVMM != vmm {
		t.Fatalf("completed %s left the instance %+v; want its VMM %s active", c.point.Template, inst.Runtime, vmm)
	}
	v, err := c.ds.VMMGet(bg, vmm)
	if err != nil {
		t.Fatal(err)
	}
	if on := c.r.sledVMMs(t)[vmm.String()]; on != v.SledID.String() {
		t.Fatalf("the active VMM is on sled %q, the database says %s", on, v.SledID)
	}
	c.r.waitRunState(t, oxide.InstanceStateRunning)
	return "running"
}

// unwoundVMM checks that the unwound saga left no VMM on any sled, and
// its VMM vmm, if it allocated it, saga_unwound.
func (c *crashCase) unwoundVMM(vmm uuid.UUID) {
	t := c.t
	t.Helper()
	if vmms := c.r.sledVMMs(t); len(vmms) != 0 {
		t.Fatalf("unwound %s left VMMs on the sleds: %v", c.point.Template, vmms)
	}
	v, err := c.ds.VMMGet(bg, vmm)
	if err == nil && v.Runtime.State != model.VMMSagaUnwound {
		t.Fatalf("unwound %s left its VMM %s; want saga_unwound", c.point.Template, v.Runtime.State)
	}
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		t.Fatal(err)
	}
}

// TestN5_ARestartedNexusUnwindsAStartWhoseSledFailsTheVMMWhileItIsDown
// covers the other way out: the sled holding the saga's VMM goes wrong
// while nexus is dead (the next EnsureState fails, or the sled forgets the
// VMM as a sled-agent restart would), so the restarted nexus's retry of
// ensure_running fails and the saga must unwind: the VMM unregistered from
// the sled, the instance stopped, and a new start must succeed.
func TestN5_ARestartedNexusUnwindsAStartWhoseSledFailsTheVMMWhileItIsDown(t *testing.T) {
	unwindsWhenTheSledFailsTheVMM(t, startScenario)
}

// unwindsWhenTheSledFailsTheVMM runs sc, whose saga ends with the start
// saga's ensure_running, killed before and after that node while the sled
// holding the saga's VMM goes wrong, on each backend: the saga must unwind.
func unwindsWhenTheSledFailsTheVMM(t *testing.T, sc *crashScenario) {
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
					point := crashPoint{Template: sc.template, Node: "ensure_running", After: at == "after"}
					t.Run(f.name+"-"+point.Node+"-"+at, func(t *testing.T) {
						if got := crashAndRecover(t, backend, sc, point, f); !strings.HasPrefix(got, "unwound") {
							t.Fatalf("the saga %s; want it unwound", got)
						}
					})
				}
			}
		})
	}
}

// crashScenario is how one saga template is driven to a crash point and
// what its outcome must leave behind: a new template's crash tests are one
// of these and a crashAtEveryPoint call. Every function gets the case,
// whose instance is "vm" in project "p".
type crashScenario struct {
	template string
	// sleds is how many sleds the rack has.
	sleds int
	// setup readies the instance through the API, before the armed saga.
	// It must not take a saga of template to the crash point's node: the
	// crash point stops only the first to get there (crashAndRecover
	// checks that setup did not). A scenario without setup has no
	// instance before its trigger, which creates it: the case takes its id
	// from the saga's parameters.
	setup func(c *crashCase)
	// trigger asks the API for the operation that runs the saga. With
	// requestWaits, the request waits for the saga, which never ends, so
	// it runs on its own goroutine until nexus dies and must not fail the
	// test; otherwise it answers before the saga stops, and its error
	// fails the test.
	trigger      func(ctx context.Context, c *crashCase) error
	requestWaits bool
	// faultVMM, for cases with a fault, is the VMM whose sled the fault
	// hits.
	faultVMM func(c *crashCase) uuid.UUID
	// outcome checks, once the saga has ended, that the instance settles
	// where the saga's outcome (c.unwound()) says, and describes it.
	outcome func(c *crashCase) string
	// usable, if set, checks that the instance (or its name, once deleted)
	// can still be used.
	usable func(c *crashCase)
}

// crashCase is one run of a scenario at one crash point.
type crashCase struct {
	t     *testing.T
	r     *rack
	ds    *datastore.DataStore
	nexus *racktest.ProcessNexus
	point crashPoint
	// instance is the id of "vm", which setup records (or, when the
	// trigger creates it, the saga's parameters name), and vmm its VMM if
	// setup started it (see runningVM).
	instance uuid.UUID
	vmm      model.VMM
	// sagaID is the saga stopped at the crash point; rec is its record
	// once it has ended.
	sagaID uuid.UUID
	rec    saga.Record
	// atRestart is what the sleds ran (VMM id → sled id) just before the
	// restart: what they did on their own while nexus was dead.
	atRestart map[string]string
	// gone is set by an outcome that found the instance deleted, as the
	// saga's outcome implies.
	gone bool
	// progress says how far the case got, for a failure's report.
	progress string
}

// unwound reports whether the saga unwound (rather than completed).
func (c *crashCase) unwound() bool { return c.rec.State == saga.StateUnwound }

// params decodes the saga's parameters into v.
func (c *crashCase) params(v any) {
	c.t.Helper()
	if err := json.Unmarshal(c.rec.Params, v); err != nil {
		c.t.Fatalf("parameters of saga %s: %v", c.sagaID, err)
	}
}

// record is the instance's database record.
func (c *crashCase) record() model.Instance {
	c.t.Helper()
	inst, err := c.ds.InstanceGet(bg, c.instance)
	if err != nil {
		c.t.Fatalf("instance %s: %v", c.instance, err)
	}
	return inst
}

// startVM starts the instance through the API and waits until it runs, on
// exactly one VMM.
func (c *crashCase) startVM() {
	c.t.Helper()
	c.untilAvailable("starting the instance", func() error {
		_, err := c.r.api.InstanceStart(bg, oxide.InstanceStartParams{Project: "p", Instance: "vm"})
		return err
	})
	c.runsAlone()
}

// createRunningVM creates the instance through the API, started, records
// it in the case and waits until it runs, on exactly one VMM.
func (c *crashCase) createRunningVM() {
	c.t.Helper()
	var inst *oxide.Instance
	c.untilAvailable("creating the instance", func() (err error) {
		inst, err = c.r.instanceCreate(bg, true)
		return err
	})
	c.instance, c.gone = uuid.MustParse(inst.Id), false
	c.runsAlone()
}

// untilAvailable makes request until it succeeds. 503 says "try again":
// nexus's connection to a sled that was just unreachable may still be
// backing off (and a start or a create with start that answers 503 has
// unwound); any other error fails the test.
func (c *crashCase) untilAvailable(what string, request func() error) {
	t := c.t
	t.Helper()
	testutil.WaitFor(t, settleTimeout, func() error {
		err := request()
		if err != nil && !errors.Is(err, oxide.ErrServiceUnavailable) {
			t.Fatalf("%s: %v", what, err)
		}
		return err
	})
}

// runsAlone waits until the instance runs, on exactly one VMM, which its
// sled and the database agree on.
func (c *crashCase) runsAlone() {
	t := c.t
	t.Helper()
	c.r.waitRunState(t, oxide.InstanceStateRunning)
	c.r.checkVMMs(t, c.ds)
	if n := len(c.r.sledVMMs(t)); n != 1 {
		t.Fatalf("%d VMMs on the sleds of the running instance, want 1", n)
	}
}

// runningVM creates the instance and starts it, and records it and its
// VMM in the case.
func (c *crashCase) runningVM() {
	c.t.Helper()
	c.instance = c.r.createVM(c.t)
	c.startVM()
	inst := c.record()
	v, err := c.ds.VMMGet(bg, *inst.Runtime.ActiveVMM)
	if err != nil || v.Runtime.State != model.VMMRunning {
		c.t.Fatalf("the started instance's VMM is %+v (%v); want it running", v, err)
	}
	c.vmm = v
}

// stopVM stops the instance through the API and waits until it is stopped,
// with nothing left on any sled.
func (c *crashCase) stopVM() {
	t := c.t
	t.Helper()
	if _, err := c.r.api.InstanceStop(bg, oxide.InstanceStopParams{Project: "p", Instance: "vm"}); err != nil {
		t.Fatalf("stopping the instance: %v", err)
	}
	c.r.waitRunState(t, oxide.InstanceStateStopped)
	c.waitSled(func(vmms map[string]string) error {
		if len(vmms) != 0 {
			return fmt.Errorf("VMMs on the sleds of the stopped instance: %v", vmms)
		}
		return nil
	})
}

// waitSled polls the sleds' registered VMMs (VMM id → sled id) until check
// passes.
func (c *crashCase) waitSled(check func(vmms map[string]string) error) {
	c.t.Helper()
	testutil.WaitFor(c.t, settleTimeout, func() error { return check(c.r.sledVMMs(c.t)) })
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

// crashAtEveryPoint runs sc at every node of its template, before and
// after, on each backend (the backends side by side), and logs what the
// restarted nexus did at each point.
func crashAtEveryPoint(t *testing.T, sc *crashScenario) {
	var nodes []string
	for _, tmpl := range sagas.Templates(sagas.Deps{}) {
		if tmpl.Name == sc.template {
			for _, n := range tmpl.Nodes {
				nodes = append(nodes, n.Name)
			}
		}
	}
	if len(nodes) == 0 {
		t.Fatalf("no %s saga template", sc.template)
	}
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			// Each case has its own processes, ports, database and sleds,
			// so the two backends run side by side.
			t.Parallel()
			var seen []string
			for _, node := range nodes {
				for _, at := range []string{"before", "after"} {
					point := crashPoint{Template: sc.template, Node: node, After: at == "after"}
					t.Run(node+"-"+at, func(t *testing.T) {
						got := crashAndRecover(t, backend, sc, point, nil)
						seen = append(seen, fmt.Sprintf("%-50s %s", point, got))
					})
				}
			}
			t.Logf("what a restarted nexus did with the %s saga killed at each point (%s):\n  %s",
				sc.template, backend, strings.Join(seen, "\n  "))
		})
	}
}

// crashAndRecover runs one case of sc and describes its outcome. f, if not
// nil, is done to the sled holding sc.faultVMM.
//
// A nexus armed with --crash-point (and reaching each sled through a proxy
// the test can cut) runs the scenario's setup and trigger; once the saga
// stands at the point, the nexus is killed with SIGKILL and restarted
// unarmed on the same addresses and database. The restarted nexus must
// finish (done) or unwind the saga, and every saga the dead one owned; the
// instance must settle where the outcome says (sc.outcome), its updater
// lock free, every sled holding only VMMs the database runs, and the
// instance must still be usable (sc.usable).
func crashAndRecover(t *testing.T, backend datastore.Backend, sc *crashScenario, point crashPoint, f *fault) string {
	if point.Template != sc.template {
		t.Fatalf("crash point %s for the scenario of %s", point, sc.template)
	}
	r := newRack(t, racktest.StartProcesses(t, racktest.Options{Backend: backend, Sleds: sc.sleds, SledProxies: true,
		NexusFirstArgs: []string{"--" + crashPointFlag, point.String()}, NexusConfig: withoutBackstops}))
	c := &crashCase{t: t, r: r, ds: r.DataStore(), nexus: r.Nexus(0).(*racktest.ProcessNexus), point: point}
	nexus, ds := c.nexus, c.ds
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(nexus.Log(), "\n")
			t.Logf("%s failed with %s; the last lines nexus logged:\n%s", point, c.progress,
				strings.Join(lines[max(0, len(lines)-80):], "\n"))
		}
	})
	if _, err := r.api.ProjectCreate(bg, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatalf("creating the project: %v", err)
	}
	c.progress = "the setup unfinished"
	if sc.setup != nil {
		sc.setup(c)
	}
	c.progress = "no saga at the crash point yet"
	if strings.Contains(nexus.Log(), crashPointMessage) {
		t.Fatalf("the scenario's setup took a %s saga to the crash point %s before the operation under test:\n%s",
			sc.template, point, nexus.Log())
	}

	var requested chan error
	if sc.requestWaits {
		requested = make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(bg, crashTimeout+processStartTimeout)
			defer cancel()
			requested <- sc.trigger(ctx, c)
		}()
	} else if err := sc.trigger(bg, c); err != nil {
		t.Fatalf("the request that runs the %s saga: %v", sc.template, err)
	}
	line := nexus.WaitLog(crashPointMessage, crashTimeout, requested)
	sagaID, err := uuid.Parse(fmt.Sprint(line["saga_id"]))
	if err != nil || line["node"] != point.Node {
		t.Fatalf("crash point line %v: want a saga id and node %s", line, point.Node)
	}
	c.sagaID = sagaID
	c.progress = fmt.Sprintf("the saga %s stopped at the crash point", sagaID)
	nexus.Kill()
	killed := time.Now()
	if requested != nil {
		<-requested // the request dies with the process; its answer says nothing
	}

	rec, err := ds.SagaGet(bg, sagaID)
	if err != nil || rec.State != saga.StateRunning || rec.Owner != nexus.ID() || rec.Template != sc.template {
		t.Fatalf("after the kill the saga is %+v (%v); want a %s saga running, owned by the dead nexus %s",
			rec, err, sc.template, nexus.ID())
	}
	c.rec = rec
	var about struct{ Instance uuid.UUID }
	c.params(&about)
	if sc.setup == nil {
		c.instance = about.Instance // the trigger creates it
	}
	if about.Instance != c.instance {
		t.Fatalf("the saga at the crash point is about instance %s, not the scenario's %s", about.Instance, c.instance)
	}
	atKill := c.describe()
	var faulty racktest.Sled
	if f != nil {
		if sc.faultVMM == nil {
			t.Fatalf("the scenario of %s names no VMM for fault %s", sc.template, f.name)
		}
		// The sled the saga allocated (faults need a crash point after
		// it did), whether or not it has the VMM yet.
		vmm := sc.faultVMM(c)
		v, err := ds.VMMGet(bg, vmm)
		if err != nil {
			t.Fatalf("the saga's VMM %s: %v", vmm, err)
		}
		faulty = r.sledByID(t, v.SledID)
		f.whileDown(t, faulty, vmm.String())
	}

	// The same nexus again, unarmed, on the same addresses and database.
	c.atRestart = r.sledVMMs(t)
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
	c.rec = rec
	if rec.State != saga.StateDone && rec.State != saga.StateUnwound {
		t.Fatalf("saga %s ended %s; want done or unwound\n%s", sagaID, rec.State, nexus.Log())
	}
	// Every saga the dead nexus owned ends too, not only this one.
	testutil.WaitFor(t, settleTimeout, func() error {
		left, err := ds.SagaListUnfinished(bg, nexus.ID())
		if err != nil {
			return err
		}
		for _, s := range left {
			if s.TimeCreated.Before(killed) {
				return fmt.Errorf("saga %s (%s) of the dead nexus is still %s", s.ID, s.Template, s.State)
			}
		}
		return nil
	})
	outcome := "completed"
	if c.unwound() {
		outcome = "unwound"
		events, err := ds.SagaEvents(bg, sagaID)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range events {
			if ev.Type == saga.EventFailed {
				outcome += fmt.Sprintf(" (%s failed: %s)", ev.Node, ev.Error)
			}
		}
	}

	c.progress = fmt.Sprintf("the saga %s %s after the restart", sagaID, outcome)

	// Not stuck: what users see settles where the saga's outcome says.
	outcome += ", " + sc.outcome(c)
	c.settled()
	if sc.usable != nil {
		sc.usable(c)
		c.settled()
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

// withoutBackstops keeps the background tasks that repair, a period later,
// what a saga left undone (the instance updater and watcher, stop wishes,
// reincarnation, the orphan VMM reaper: N8, N12, N13) from running during a
// case, however slow: the saga and what it starts must settle the rack on
// their own.
func withoutBackstops(_ int, c *config.Config) {
	for _, period := range []*duration.Duration{&c.InstanceWatcherPeriod, &c.InstanceUpdaterPeriod,
		&c.StopWishPeriod, &c.ReincarnationPeriod, &c.OrphanVMMPeriod} {
		*period = duration.Duration(time.Hour)
	}
}

// describe says what the sleds and the instance are at the kill.
func (c *crashCase) describe() string {
	vmms := fmt.Sprintf("%d VMM(s) on the sleds", len(c.r.sledVMMs(c.t)))
	inst, err := c.ds.InstanceGet(bg, c.instance)
	switch {
	case errors.Is(err, model.ErrNotFound):
		return vmms + ", no instance"
	case err != nil:
		c.t.Fatal(err)
	}
	lock := "free"
	if h := inst.UpdaterID; h != nil && *h == c.sagaID {
		lock = "held by the saga"
	} else if h != nil {
		lock = "held by " + h.String()
	}
	return fmt.Sprintf("%s, instance %s, updater lock %s", vmms, inst.Runtime.State, lock)
}

// settled waits until the rack is at rest: no saga of the nexus unfinished
// and none stuck, the instance (unless the outcome found it deleted)
// needing no update and its updater lock free, and every VMM on a sled the
// active VMM of its instance there.
func (c *crashCase) settled() {
	t, ds := c.t, c.ds
	t.Helper()
	testutil.WaitFor(t, settleTimeout, func() error {
		left, err := ds.SagaListUnfinished(bg, c.nexus.ID())
		if err != nil {
			return err
		}
		if len(left) != 0 {
			return fmt.Errorf("%d saga(s) unfinished, e.g. %s %s", len(left), left[0].Template, left[0].State)
		}
		snap, err := ds.InstanceSnapshot(bg, c.instance)
		if errors.Is(err, model.ErrNotFound) && c.gone {
			return nil
		}
		if err != nil {
			return err
		}
		if h := snap.Instance.UpdaterID; h != nil {
			return fmt.Errorf("the instance's updater lock is held by %s", h)
		}
		if model.NeedsSettling(snap) {
			return fmt.Errorf("the instance needs an update: %+v", snap.Instance.Runtime)
		}
		return nil
	})
	if stuck, err := ds.SagaListStuck(bg); err != nil || len(stuck) != 0 {
		t.Fatalf("stuck sagas: %+v (%v)", stuck, err)
	}
	c.r.checkVMMs(t, ds)
}

// rack is one case's world: a rack of processes and clients of its nexus
// as a fleet admin, the Oxide SDK and plain REST (for the extensions the
// SDK lacks).
type rack struct {
	racktest.Rack
	api  *oxide.Client
	rest *racktest.Client
}

func newRack(t *testing.T, r racktest.Rack) *rack {
	rest := r.Client(racktest.FleetAdmin)
	return &rack{Rack: r, api: rest.SDK(t), rest: rest}
}

// createVM creates instance "vm" in project "p", stopped, and returns its
// id.
func (r *rack) createVM(t *testing.T) uuid.UUID {
	t.Helper()
	inst, err := r.instanceCreate(bg, false)
	if err != nil {
		t.Fatalf("creating the instance: %v", err)
	}
	return uuid.MustParse(inst.Id)
}

// instanceCreate asks the API to create instance "vm" in project "p",
// started or not.
func (r *rack) instanceCreate(ctx context.Context, start bool) (*oxide.Instance, error) {
	return r.api.InstanceCreate(ctx, oxide.InstanceCreateParams{Project: "p", Body: &oxide.InstanceCreate{
		Name: "vm", Hostname: "vm", Memory: 4 << 30, Ncpus: 2, Start: &start}})
}

// sledByID is the rack's sled of that id.
func (r *rack) sledByID(t *testing.T, id uuid.UUID) racktest.Sled {
	t.Helper()
	for _, s := range r.Sleds() {
		if s.ID() == id {
			return s
		}
	}
	t.Fatalf("no sled %s in the rack", id)
	return nil
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
// a run_state other than starting, stopping or migrating on the way fails
// at once.
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
		case oxide.InstanceStateStarting, oxide.InstanceStateStopping, oxide.InstanceStateMigrating:
			return fmt.Errorf("instance is %s, waiting for %s", inst.RunState, want)
		}
		t.Fatalf("instance is %s, want %s", inst.RunState, want)
		return nil
	})
}
