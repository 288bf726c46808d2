package nexus_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// The F9 stress test: many clients fire force-terminate, stop, start,
// reboot and migrate at a few instances at once, then the rack must settle
// into a state where the database and every sled agree. No fault is
// injected: no sled forgets a VMM or stops answering.
//
// During the run: every answer is an instance (2xx) or an Oxide error,
// never a 500; a force-terminate answers 200 stopped (F1; failed only for
// a VMM a sled forgot, which does not happen here); and a monitor polling
// every instance and VMM row sees generations only go up, no runtime change
// without a new generation, no VMM back from an end state, and no VMM
// marked failed for a sled not knowing it (N3, F5, F9).
//
// Once the clients stop and the background tasks (instance watcher and
// updater) have run: no instance is starting, stopping, migrating,
// rebooting or failed; no updater lock is held; every VMM registered on a
// sled is the active or target VMM of its instance, live in the database,
// on that sled; every live VMM in the database is used by its instance, and
// every active one is registered on its sled; the VMMs a force-terminate
// answered 200 for have ended; no saga is running, unwinding or stuck;
// and another pass of the background tasks changes nothing.
//
// It is sized by operations, not by time, so that a replay (STRESS_SEED)
// fires the same plan: which worker sends which operation to which
// instance, after which pause. The interleaving on the server is still up
// to the scheduler.
const (
	stressSleds        = 3
	stressInstances    = 8
	stressWorkers      = 24
	stressOpsPerWorker = 12
	// stressMaxPause is the longest pause a worker takes before an
	// operation, so that operations land in every phase of the 5 ms
	// transitions of the sims.
	stressMaxPause = 8 * time.Millisecond
	// stressSettleBound is how long the rack has to settle once the
	// clients stop, with the background tasks activated every round.
	stressSettleBound = 10 * time.Second
	// stressSeedEnv replays a run.
	stressSeedEnv = "STRESS_SEED"
)

type stressOp string

const (
	opForceTerminate stressOp = "force-terminate"
	opStop           stressOp = "stop"
	opStart          stressOp = "start"
	opReboot         stressOp = "reboot"
	opMigrate        stressOp = "migrate"
)

// stressWeights is how often each operation is drawn (out of 100).
var stressWeights = []struct {
	op     stressOp
	weight int
}{{opForceTerminate, 30}, {opStop, 20}, {opStart, 25}, {opReboot, 10}, {opMigrate, 15}}

type plannedOp struct {
	op       stressOp
	instance int
	// dstPick chooses the destination of a migration among the sleds the
	// instance does not run on when the request is sent.
	dstPick int
	pause   time.Duration
}

// stressOutcome is one request and its answer.
type stressOutcome struct {
	worker, seq int
	op          stressOp
	instance    uuid.UUID
	dst         uuid.UUID // migrate only
	// before lists the instance's VMMs linked and not yet ended in the
	// database just before a force-terminate was sent: once it answered
	// 200, each of them must end (F3).
	before     []uuid.UUID
	start, end time.Time
	status     int
	runState   string
	errorCode  string
	message    string
}

func (o stressOutcome) String() string {
	s := fmt.Sprintf("w%02d#%02d %-15s", o.worker, o.seq, o.op)
	if o.op == opMigrate {
		s += " to " + o.dst.String()[:8]
	}
	s += fmt.Sprintf(" -> %d", o.status)
	if o.runState != "" {
		s += " " + o.runState
	}
	if o.errorCode != "" {
		s += " " + o.errorCode + ": " + o.message
	}
	return s
}

// violation is a broken invariant, about one instance when instance is set.
type violation struct {
	instance uuid.UUID
	msg      string
}

func stressSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv(stressSeedEnv); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q is not an unsigned integer", stressSeedEnv, s)
		}
		return seed
	}
	return uint64(time.Now().UnixNano())
}

func TestF9_ConcurrentForceTerminateStopStartRebootMigrateLeaveAConsistentRack(t *testing.T) {
	seed := stressSeed(t)
	t.Logf("seed %d (replay with %s=%d)", seed, stressSeedEnv, seed)
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			s := newStress(t, backend, seed)
			s.run()
			s.quiesceAndCheck()
			if t.Failed() {
				s.dumpEvidence()
				t.Logf("seed %d (replay with %s=%d)", seed, stressSeedEnv, seed)
			}
		})
	}
}

type stress struct {
	t         *testing.T
	seed      uint64
	n         *nexus.Server
	agents    []*sledagenttest.Agent
	sleds     []uuid.UUID
	api       *racktest.Client
	instances []uuid.UUID
	nexusID   uuid.UUID
	logs      *observer.ObservedLogs
	monitor   *genMonitor

	mu       sync.Mutex
	outcomes []stressOutcome
	// flagged are the instances a failure is about, whose history is
	// logged at the end.
	flagged map[uuid.UUID]bool
}

func (s *stress) flag(id uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flagged[id] = true
}

func newStress(t *testing.T, backend datastore.Backend, seed uint64) *stress {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core(), core))
	r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: stressSleds, Log: log})
	n, agents := r.Server(), r.Agents()
	s := &stress{t: t, seed: seed, n: n, agents: agents, logs: logs, nexusID: r.Nexus(0).ID(), flagged: map[uuid.UUID]bool{},
		api: r.Client(racktest.FleetAdmin)}
	t.Cleanup(s.api.HTTP.CloseIdleConnections)
	for _, a := range agents {
		s.sleds = append(s.sleds, sledID(a))
	}
	c := s.api.SDK(t)
	if ans, err := s.call(http.MethodPost, "/v1/projects", `{"name": "stress", "description": ""}`); err != nil || ans.Status != http.StatusCreated {
		t.Fatalf("creating the project: %v %d %s", err, ans.Status, ans.Body)
	}
	for i := 0; i < stressInstances; i++ {
		name := fmt.Sprintf("vm-%d", i)
		created := createInstance(t, c, "stress", name, true)
		s.instances = append(s.instances, uuid.MustParse(created.Id))
	}
	for i := range s.instances {
		waitRunState(t, c, "stress", fmt.Sprintf("vm-%d", i), "running")
	}
	s.monitor = startGenMonitor(t, r.Database())
	return s
}

// call sends a request as the fleet admin. It never fails the test, so
// that workers may use it.
func (s *stress) call(method, path, body string) (racktest.Response, error) {
	reqCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return s.api.Do(reqCtx, method, path, body)
}

func (s *stress) plan() [][]plannedOp {
	rng := rand.New(rand.NewPCG(s.seed, 0xF9))
	total := 0
	for _, w := range stressWeights {
		total += w.weight
	}
	plan := make([][]plannedOp, stressWorkers)
	for w := range plan {
		for k := 0; k < stressOpsPerWorker; k++ {
			pick, op := rng.IntN(total), stressOp("")
			for _, cand := range stressWeights {
				if pick < cand.weight {
					op = cand.op
					break
				}
				pick -= cand.weight
			}
			plan[w] = append(plan[w], plannedOp{op: op, instance: rng.IntN(stressInstances),
				dstPick: rng.IntN(stressSleds - 1), pause: time.Duration(rng.Int64N(int64(stressMaxPause)))})
		}
	}
	return plan
}

// run fires the plan from every worker at once and waits for the answers.
func (s *stress) run() {
	plan := s.plan()
	began := time.Now()
	var wg sync.WaitGroup
	for w, ops := range plan {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k, p := range ops {
				time.Sleep(p.pause)
				o := s.fire(w, k, p)
				s.mu.Lock()
				s.outcomes = append(s.outcomes, o)
				s.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	counts := map[string]int{}
	for _, o := range s.outcomes {
		key := fmt.Sprintf("%s %d", o.op, o.status)
		if o.runState != "" {
			key += " " + o.runState
		}
		counts[key]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %-34s %4d", k, counts[k])
	}
	s.t.Logf("%d operations from %d workers in %s; answers:%s", len(s.outcomes), stressWorkers,
		time.Since(began).Round(time.Millisecond), b.String())
	s.checkLaterStarts()
}

// checkLaterStarts: a force-terminate may answer starting or running only
// when a start of the same instance was in flight at the same time (its
// wish, recorded after the force-terminate's, wins); otherwise the answer
// was not settled (F1).
func (s *stress) checkLaterStarts() {
	for _, ft := range s.outcomes {
		if ft.op != opForceTerminate || ft.status != http.StatusOK || (ft.runState != "starting" && ft.runState != "running") {
			continue
		}
		raced := slices.ContainsFunc(s.outcomes, func(o stressOutcome) bool {
			return o.op == opStart && o.instance == ft.instance && o.start.Before(ft.end) && o.end.After(ft.start)
		})
		if !raced {
			s.flag(ft.instance)
			s.t.Errorf("force-terminate of instance %s answered %s with no start racing it, want stopped or failed (F1)",
				ft.instance, ft.runState)
		}
	}
}

func (s *stress) fire(worker, seq int, p plannedOp) stressOutcome {
	id := s.instances[p.instance]
	o := stressOutcome{worker: worker, seq: seq, op: p.op, instance: id}
	path := "/v1/instances/" + id.String() + "/" + string(p.op)
	body := ""
	switch p.op {
	case opMigrate:
		o.dst = s.migrationDestination(id, p.dstPick)
		body = fmt.Sprintf(`{"dst_sled_id": %q}`, o.dst)
	case opForceTerminate:
		if snap, err := s.n.DataStore().InstanceSnapshot(ctx, id); err == nil {
			for _, v := range []*model.VMM{snap.Active, snap.Target} {
				if v != nil && !v.Runtime.State.Terminal() {
					o.before = append(o.before, v.ID)
				}
			}
		} else {
			s.t.Errorf("reading instance %s: %v", id, err)
		}
	}
	o.start = time.Now()
	ans, err := s.call(http.MethodPost, path, body)
	o.end = time.Now()
	o.status = ans.Status
	if err != nil {
		s.flag(id)
		s.t.Errorf("%s of %s: %v", p.op, id, err)
		return o
	}
	if err := s.judge(&o, ans.Body); err != nil {
		s.flag(id)
		s.t.Errorf("%s of instance %s answered %d: %v\n  body: %s", p.op, id, ans.Status, err, ans.Body)
	}
	return o
}

// migrationDestination is one of the sleds the instance does not run on
// now (any sled when it runs nowhere: the migration is then refused).
func (s *stress) migrationDestination(id uuid.UUID, pick int) uuid.UUID {
	var current uuid.UUID
	if snap, err := s.n.DataStore().InstanceSnapshot(ctx, id); err == nil && snap.Active != nil {
		current = snap.Active.SledID
	}
	var others []uuid.UUID
	for _, sled := range s.sleds {
		if sled != current {
			others = append(others, sled)
		}
	}
	return others[pick%len(others)]
}

var knownRunStates = []string{"creating", "starting", "running", "stopping", "stopped", "rebooting",
	"migrating", "repairing", "failed", "destroyed"}

// judge checks an answer: an instance (200, or 202 for start, stop and
// reboot, as Oxide answers) or an Oxide error, never 500, and for a
// force-terminate a settled state (F1).
func (s *stress) judge(o *stressOutcome, body []byte) error {
	if o.status == http.StatusOK || o.status == http.StatusAccepted {
		var inst struct {
			ID       string `json:"id"`
			Name     string `json:"name"`
			RunState string `json:"run_state"`
		}
		if err := json.Unmarshal(body, &inst); err != nil {
			return fmt.Errorf("a body that is not an instance: %v", err)
		}
		o.runState = inst.RunState
		if inst.ID != o.instance.String() || inst.Name == "" || !slices.Contains(knownRunStates, inst.RunState) {
			return fmt.Errorf("a body that is not this instance (id %q, name %q, run_state %q)", inst.ID, inst.Name, inst.RunState)
		}
		if o.op == opForceTerminate {
			if o.status != http.StatusOK {
				return fmt.Errorf("force-terminate answered %d, want 200 (F1)", o.status)
			}
			switch inst.RunState {
			case "stopped":
			case "failed":
				// Only a VMM its sled forgot fails an instance (F5), and no
				// sled forgets anything here: some race failed it (F9).
				return fmt.Errorf("force-terminate answered failed although no sled forgot any VMM: a race failed the instance (F5, F9)")
			case "starting", "running":
				// Legal only when a start of the instance raced this call
				// and recorded its own wish after it: checked once every
				// answer is in (checkLaterStarts).
			default:
				return fmt.Errorf("force-terminate answered %s, want stopped or failed (F1)", inst.RunState)
			}
		}
		return nil
	}
	var e racktest.Error
	if err := json.Unmarshal(body, &e); err != nil || e.ErrorCode == "" || e.RequestID == "" || e.Message == "" {
		return fmt.Errorf("not an Oxide error body (%v)", err)
	}
	o.errorCode, o.message = e.ErrorCode, e.Message
	switch o.status {
	case http.StatusInternalServerError:
		return fmt.Errorf("500: a race must not be an internal error")
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return fmt.Errorf("the instance exists and the caller is a fleet admin")
	}
	return nil
}

// quiesceAndCheck activates the background tasks until the rack is
// settled and consistent, then once more to see that it stays so.
func (s *stress) quiesceAndCheck() {
	t := s.t
	began := time.Now()
	var last []violation
	rounds := 0
	unsettled := errors.New("inconsistent")
	if testutil.Poll(stressSettleBound, func() error {
		rounds++
		last = append(s.activateTasks(), s.check()...)
		if len(last) > 0 {
			return unsettled
		}
		return nil
	}) != nil {
		s.report(fmt.Sprintf("not settled and consistent %s after the clients stopped", stressSettleBound), last)
	} else {
		t.Logf("settled and consistent after %d round(s) of background tasks, %s", rounds, time.Since(began).Round(time.Millisecond))
		// Settled: another pass of the background tasks leaves it
		// consistent. (An update saga it starts in the background may
		// still be finishing, so consistency is polled for, briefly.)
		again := s.activateTasks()
		if len(again) == 0 && testutil.Poll(5*time.Second, func() error {
			if again = s.check(); len(again) > 0 {
				return unsettled
			}
			return nil
		}) == nil {
			again = nil
		}
		if len(again) > 0 {
			s.report("another pass of the background tasks left the rack inconsistent", again)
		}
	}
	violations := s.monitor.stop()
	t.Logf("generation monitor: %d polls of every instance and VMM row", s.monitor.polls)
	if len(violations) > 0 {
		s.report("the generation monitor saw writes it must never see", violations)
	}
	if v := s.checkForceTerminatedVMMs(); len(v) > 0 {
		s.report("VMMs a force-terminate answered 200 for did not end (F3)", v)
	}
}

func (s *stress) report(what string, vs []violation) {
	var b strings.Builder
	for _, v := range vs {
		b.WriteString("\n  ")
		if v.instance != uuid.Nil {
			s.flag(v.instance)
			b.WriteString("instance " + v.instance.String() + ": ")
		}
		b.WriteString(v.msg)
	}
	s.t.Errorf("%s:%s", what, b.String())
}

func (s *stress) activateTasks() []violation {
	var out []violation
	for _, task := range []string{nexus.TaskInstanceWatcher, nexus.TaskInstanceUpdater} {
		if err := s.n.Background().Activate(ctx, task); err != nil {
			out = append(out, violation{msg: fmt.Sprintf("background task %s: %v", task, err)})
		}
	}
	return out
}

var transitional = []string{"creating", "starting", "stopping", "migrating", "rebooting"}

// check compares the database, the REST view and every sled's inventory.
func (s *stress) check() []violation {
	ds := s.n.DataStore()
	var out []violation
	add := func(id uuid.UUID, format string, args ...any) {
		out = append(out, violation{instance: id, msg: fmt.Sprintf(format, args...)})
	}
	registered := map[uuid.UUID]uuid.UUID{} // VMM -> sled it is registered on
	for i, a := range s.agents {
		for _, v := range a.Inventory().GetVmms() {
			id := uuid.MustParse(v.GetVmmId())
			if other, ok := registered[id]; ok {
				add(uuid.MustParse(v.GetInstanceId()), "VMM %s is registered on two sleds, %s and %s", id, other, s.sleds[i])
			}
			registered[id] = s.sleds[i]
		}
	}
	// Every registered VMM is one its instance uses, live in the database,
	// on the sled the database says.
	for id, sled := range registered {
		v, err := ds.VMMGet(ctx, id)
		if err != nil {
			add(uuid.Nil, "VMM %s registered on sled %s: %v", id, sled, err)
			continue
		}
		inst, err := ds.InstanceGet(ctx, v.InstanceID)
		if err != nil {
			add(v.InstanceID, "instance of registered VMM %s: %v", id, err)
			continue
		}
		linked := (inst.Runtime.ActiveVMM != nil && *inst.Runtime.ActiveVMM == id) ||
			(inst.Runtime.TargetVMM != nil && *inst.Runtime.TargetVMM == id)
		switch {
		case !linked:
			add(v.InstanceID, "VMM %s (%s in the database) is registered on sled %s but its instance does not use it (%s)",
				id, v.Runtime.State, sled, runtimeString(inst.Runtime))
		case v.Runtime.State.Terminal():
			add(v.InstanceID, "VMM %s is registered on sled %s but %s in the database", id, sled, v.Runtime.State)
		case v.SledID != sled:
			add(v.InstanceID, "VMM %s is registered on sled %s but placed on sled %s in the database", id, sled, v.SledID)
		}
	}
	// A VMM live in the database is one its instance uses.
	live, err := ds.VMMListActive(ctx)
	if err != nil {
		add(uuid.Nil, "listing live VMMs: %v", err)
	}
	for _, v := range live {
		inst, err := ds.InstanceGet(ctx, v.InstanceID)
		if err != nil {
			add(v.InstanceID, "instance of live VMM %s: %v", v.ID, err)
			continue
		}
		if (inst.Runtime.ActiveVMM == nil || *inst.Runtime.ActiveVMM != v.ID) && (inst.Runtime.TargetVMM == nil || *inst.Runtime.TargetVMM != v.ID) {
			add(v.InstanceID, "VMM %s is %s in the database but its instance does not use it (%s)", v.ID, v.Runtime.State, runtimeString(inst.Runtime))
		}
	}
	for _, id := range s.instances {
		inst, err := ds.InstanceGet(ctx, id)
		if err != nil {
			add(id, "%v", err)
			continue
		}
		if inst.UpdaterID != nil {
			add(id, "updater lock still held by %s", inst.UpdaterID)
		}
		switch inst.Runtime.State {
		case model.InstanceNoVMM:
		case model.InstanceVMM:
			active := *inst.Runtime.ActiveVMM
			if sled, ok := registered[active]; !ok {
				add(id, "active VMM %s is registered on no sled (%s)", active, runtimeString(inst.Runtime))
			} else if v, err := ds.VMMGet(ctx, active); err == nil && v.SledID != sled {
				add(id, "active VMM %s runs on sled %s, the database says %s", active, sled, v.SledID)
			}
		default:
			add(id, "instance is %s (%s); with no fault injected it must be no_vmm or vmm", inst.Runtime.State, runtimeString(inst.Runtime))
		}
		ans, err := s.call(http.MethodGet, "/v1/instances/"+id.String(), "")
		var view struct {
			RunState string `json:"run_state"`
		}
		if err == nil && ans.Status == http.StatusOK {
			err = json.Unmarshal(ans.Body, &view)
		} else if err == nil {
			err = fmt.Errorf("%d %s", ans.Status, ans.Body)
		}
		switch {
		case err != nil:
			add(id, "GET: %v", err)
		case slices.Contains(transitional, view.RunState):
			active := "-"
			if inst.Runtime.ActiveVMM != nil {
				if v, err := ds.VMMGet(ctx, *inst.Runtime.ActiveVMM); err == nil {
					active = fmt.Sprintf("%s at generation %d", v.Runtime.State, v.Runtime.Generation)
				}
			}
			add(id, "still %s (%s; active VMM %s; intended %s)", view.RunState, runtimeString(inst.Runtime), active, inst.IntendedState)
		case view.RunState == "failed":
			add(id, "failed although no fault was injected (%s)", runtimeString(inst.Runtime))
		case view.RunState != "running" && view.RunState != "stopped":
			add(id, "run_state %s", view.RunState)
		}
	}
	out = append(out, s.checkFailedVMMs()...)
	out = append(out, s.checkSagas()...)
	return out
}

func runtimeString(rt model.InstanceRuntime) string {
	id := func(u *uuid.UUID) string {
		if u == nil {
			return "-"
		}
		return u.String()
	}
	return fmt.Sprintf("state %s gen %d active %s target %s migration %s", rt.State, rt.Generation,
		id(rt.ActiveVMM), id(rt.TargetVMM), id(rt.MigrationID))
}

// checkFailedVMMs: nothing is forgotten by any sled in this test, so no
// VMM may be marked failed for a sled not knowing it (F5: two racing stops
// must never fail anything). The one VMM a sled itself reports failed
// without a fault is a migration target that could not pull its guest
// because its source stopped before the pull began; it never becomes the
// active VMM, so its instance does not fail.
func (s *stress) checkFailedVMMs() []violation {
	var out []violation
	rows, err := s.monitor.db.QueryContext(ctx, `SELECT v.id, v.instance_id, COALESCE(v.failure_reason, ''),
			(SELECT count(*) FROM migration m WHERE m.target_propolis_id = v.id)
		FROM vmm v WHERE v.state = 'failed'`)
	if err != nil {
		return []violation{{msg: fmt.Sprintf("listing failed VMMs: %v", err)}}
	}
	defer rows.Close()
	for rows.Next() {
		var id, instance, reason string
		var asTarget int
		if err := rows.Scan(&id, &instance, &reason, &asTarget); err != nil {
			return append(out, violation{msg: err.Error()})
		}
		if reason != "" || asTarget == 0 {
			out = append(out, violation{instance: uuid.MustParse(instance),
				msg: fmt.Sprintf("VMM %s ended failed (reason %q, migration target of %d migration(s)) although no fault was injected",
					id, reason, asTarget)})
		}
	}
	if err := rows.Err(); err != nil {
		out = append(out, violation{msg: err.Error()})
	}
	return out
}

// checkSagas: none of this nexus's sagas is still running or unwinding,
// and none is stuck, in the database or on the operator's endpoint.
func (s *stress) checkSagas() []violation {
	var out []violation
	ds := s.n.DataStore()
	unfinished, err := ds.SagaListUnfinished(ctx, s.nexusID)
	if err != nil {
		out = append(out, violation{msg: fmt.Sprintf("listing unfinished sagas: %v", err)})
	}
	for _, r := range unfinished {
		out = append(out, violation{msg: fmt.Sprintf("saga %s (%s) is still %s: %s", r.ID, r.Template, r.State, r.Params)})
	}
	stuck, err := ds.SagaListStuck(ctx)
	if err != nil {
		out = append(out, violation{msg: fmt.Sprintf("listing stuck sagas: %v", err)})
	}
	for _, r := range stuck {
		out = append(out, violation{msg: fmt.Sprintf("saga %s (%s) is stuck: %s", r.ID, r.Template, r.Params)})
	}
	ans, err := s.call(http.MethodGet, "/v1/system/sagas/stuck", "")
	var page struct {
		Items []json.RawMessage `json:"items"`
	}
	if err == nil && ans.Status == http.StatusOK {
		err = json.Unmarshal(ans.Body, &page)
	} else if err == nil {
		err = fmt.Errorf("%d %s", ans.Status, ans.Body)
	}
	if err != nil {
		out = append(out, violation{msg: fmt.Sprintf("GET /v1/system/sagas/stuck: %v", err)})
	} else if len(page.Items) > 0 {
		out = append(out, violation{msg: fmt.Sprintf("GET /v1/system/sagas/stuck lists %d saga(s): %s", len(page.Items), ans.Body)})
	}
	return out
}

// checkForceTerminatedVMMs: every VMM that was live and linked to an
// instance just before a force-terminate that answered 200 has ended (F3).
func (s *stress) checkForceTerminatedVMMs() []violation {
	var out []violation
	for _, o := range s.outcomes {
		if o.op != opForceTerminate || o.status != http.StatusOK {
			continue
		}
		for _, id := range o.before {
			v, err := s.n.DataStore().VMMGet(ctx, id)
			if err != nil {
				out = append(out, violation{instance: o.instance, msg: fmt.Sprintf("VMM %s: %v", id, err)})
			} else if !v.Runtime.State.Terminal() {
				out = append(out, violation{instance: o.instance, msg: fmt.Sprintf("VMM %s is %s after %s answered 200", id, v.Runtime.State, o)})
			}
		}
	}
	return out
}

// dumpEvidence logs, for every instance a failure is about (every instance
// when none is named), its operations in the order they were sent and what
// nexus logged about it at info level and above.
func (s *stress) dumpEvidence() {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := len(s.flagged) == 0
	outcomes := slices.Clone(s.outcomes)
	sort.Slice(outcomes, func(i, j int) bool { return outcomes[i].start.Before(outcomes[j].start) })
	var began time.Time
	if len(outcomes) > 0 {
		began = outcomes[0].start
	}
	for i, id := range s.instances {
		if !all && !s.flagged[id] {
			continue
		}
		var b strings.Builder
		for _, o := range outcomes {
			if o.instance == id {
				fmt.Fprintf(&b, "\n  %8.1fms %8.1fms  %s", ms(o.start.Sub(began)), ms(o.end.Sub(began)), o)
			}
		}
		s.t.Logf("instance vm-%d %s, operations (sent, answered, relative to the first):%s", i, id, b.String())
		var l strings.Builder
		lines := 0
		for _, e := range s.logs.All() {
			if !mentions(e, id.String()) || lines >= 300 {
				continue
			}
			lines++
			fmt.Fprintf(&l, "\n  %8.1fms %s %s", ms(e.Time.Sub(began)), e.Level.CapitalString(), e.Message)
			for k, v := range e.ContextMap() {
				if k != "nexus_id" {
					fmt.Fprintf(&l, " %s=%v", k, v)
				}
			}
		}
		s.t.Logf("instance vm-%d %s, nexus log:%s", i, id, l.String())
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func mentions(e observer.LoggedEntry, id string) bool {
	if strings.Contains(e.Message, id) {
		return true
	}
	for _, v := range e.ContextMap() {
		if strings.Contains(fmt.Sprint(v), id) {
			return true
		}
	}
	return false
}

// genMonitor polls every instance and VMM row throughout the run and
// checks that state generations never go down, that a runtime never
// changes without its generation advancing, that a VMM never comes back
// from destroyed, failed or saga_unwound (N3, F9), and that no VMM is ever
// marked failed for its sled not knowing it: no sled forgets anything in
// this test, so such a mark is a race taken for a lost VMM (F5, F9), even
// when a later write (an unwinding start) covers it.
type genMonitor struct {
	t    *testing.T
	db   *sql.DB
	done chan struct{}
	wg   sync.WaitGroup

	polls      int
	instances  map[string]monitoredRow
	vmms       map[string]monitoredRow
	violations []violation
}

type monitoredRow struct {
	instance string
	runtime  string // everything the generation guards
	state    string
	reason   string
	gen      int64
}

func startGenMonitor(t *testing.T, database racktest.Database) *genMonitor {
	t.Helper()
	var db *sql.DB
	var err error
	if database.Backend == datastore.SQLite {
		db, err = sql.Open("sqlite", "file:"+database.URL+"?_pragma=busy_timeout(10000)")
	} else {
		db, err = sql.Open("pgx", database.URL)
	}
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	m := &genMonitor{t: t, db: db, done: make(chan struct{}), instances: map[string]monitoredRow{}, vmms: map[string]monitoredRow{}}
	if err := m.poll(); err != nil {
		t.Fatalf("generation monitor: %v", err)
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			select {
			case <-m.done:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if err := m.poll(); err != nil {
				m.violations = append(m.violations, violation{msg: fmt.Sprintf("generation monitor: %v", err)})
				return
			}
		}
	}()
	t.Cleanup(func() { db.Close() })
	return m
}

// stop ends the polling after one last poll and returns what it found.
func (m *genMonitor) stop() []violation {
	close(m.done)
	m.wg.Wait()
	if err := m.poll(); err != nil {
		m.violations = append(m.violations, violation{msg: fmt.Sprintf("generation monitor: %v", err)})
	}
	return m.violations
}

func (m *genMonitor) poll() error {
	m.polls++
	rows, err := m.db.QueryContext(ctx, `SELECT id, state, COALESCE(active_propolis_id, ''),
		COALESCE(target_propolis_id, ''), COALESCE(migration_id, ''), state_generation FROM instance`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id, state, active, target, migration string
		var gen int64
		if err := rows.Scan(&id, &state, &active, &target, &migration, &gen); err != nil {
			rows.Close()
			return err
		}
		m.observe(m.instances, "instance", id, monitoredRow{instance: id, state: state, gen: gen,
			runtime: fmt.Sprintf("%s active=%s target=%s migration=%s", state, active, target, migration)})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = m.db.QueryContext(ctx, `SELECT id, instance_id, state, COALESCE(failure_reason, ''), state_generation FROM vmm`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, instance, state, reason string
		var gen int64
		if err := rows.Scan(&id, &instance, &state, &reason, &gen); err != nil {
			return err
		}
		m.observe(m.vmms, "VMM", id, monitoredRow{instance: instance, state: state, reason: reason, gen: gen, runtime: state + " " + reason})
	}
	return rows.Err()
}

func (m *genMonitor) observe(seen map[string]monitoredRow, kind, id string, now monitoredRow) {
	prev, ok := seen[id]
	seen[id] = now
	if len(m.violations) > 50 {
		return
	}
	bad := func(format string, args ...any) {
		inst, _ := uuid.Parse(now.instance)
		m.violations = append(m.violations, violation{instance: inst,
			msg: fmt.Sprintf("%s %s: ", kind, id) + fmt.Sprintf(format, args...)})
	}
	if kind == "VMM" && now.state == string(model.VMMFailed) && now.reason != "" &&
		(!ok || prev.state != now.state || prev.reason != now.reason) {
		bad("marked failed (%s) at generation %d although no sled forgot any VMM", now.reason, now.gen)
	}
	if !ok {
		return
	}
	switch {
	case now.gen < prev.gen:
		bad("generation went down from %d (%s) to %d (%s)", prev.gen, prev.runtime, now.gen, now.runtime)
	case now.gen == prev.gen && now.runtime != prev.runtime:
		bad("runtime changed from %q to %q at the same generation %d", prev.runtime, now.runtime, now.gen)
	}
	if kind == "VMM" && model.VMMState(prev.state).Terminal() && !model.VMMState(now.state).Terminal() {
		bad("came back from %s (generation %d) to %s (generation %d)", prev.state, prev.gen, now.state, now.gen)
	}
}
