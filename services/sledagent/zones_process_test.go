package sledagent_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/process"
)

// The process zone runtime (Z10), driven through a real sled-agent: zones
// of kind oximeter run a small shell script as their process here, and the
// tests count the processes that carry a zone's id in their environment.

const oximeter = sledagentv1.ZoneKind_ZONE_KIND_OXIMETER

// zoneScript writes a zone command: a shell script that says it is up and
// then waits, ignoring SIGTERM if told to.
func zoneScript(t *testing.T, ignoreTerm bool) string {
	t.Helper()
	body := "#!/bin/sh\necho \"zone $RACKPLANE_ZONE_ID up in $RACKPLANE_ZONE_DIR\"\n"
	if ignoreTerm {
		body += "trap '' TERM\nwhile :; do sleep 1; done\n"
	} else {
		body += "exec sleep 100000\n"
	}
	path := filepath.Join(t.TempDir(), "zone.sh")
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// processZones is a sled-agent config running oximeter zones as processes
// of command; every zone process left when the test ends is stopped.
func processZones(t *testing.T, command string, c *config.Config) {
	c.ZoneCommands = map[string]string{"oximeter": command}
	c.ZoneRoot = filepath.Join(filepath.Dir(c.ZoneStateDir), "pools")
	c.ZoneStopTimeout = config.Duration(5 * time.Second)
	root := c.ZoneRoot
	t.Cleanup(func() { process.StopAll(root, time.Second) }) //nolint:errcheck // best effort
}

// zonePids lists the processes that run zone id.
func zonePids(t *testing.T, id string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue // a zombie runs nothing
		}
		// The zone's own process, which leads its process group: its
		// children (a shell's sleep) inherit the environment too.
		for _, kv := range bytes.Split(env, []byte{0}) {
			if string(kv) == "RACKPLANE_ZONE_ID="+id && isGroupLeader(e.Name()) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// isGroupLeader reports whether the process leads its process group: a zone's
// process does, its children do not.
func isGroupLeader(pid string) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	fields := strings.Fields(string(stat[i+1:]))
	return len(fields) > 2 && fields[2] == pid
}

// onePid waits until exactly one process runs the zone and returns it.
func onePid(t *testing.T, id string) int {
	t.Helper()
	var pid int
	testutil.WaitFor(t, 10*time.Second, func() error {
		pids := zonePids(t, id)
		if len(pids) != 1 {
			return fmt.Errorf("zone %s runs in %d processes %v, want 1", id, len(pids), pids)
		}
		pid = pids[0]
		return nil
	})
	return pid
}

func zoneState(inv *sledagentv1.GetInventoryResponse, id string) (sledagentv1.ZoneState, bool) {
	for _, z := range inv.GetLastReconciliation().GetZones() {
		if z.GetZoneId() == id {
			if z.GetError() == nil {
				return sledagentv1.ZoneState_ZONE_STATE_RUNNING, true
			}
			return z.GetError().GetState(), true
		}
	}
	return 0, false
}

func TestZ10_AProcessZoneStartsRestartsWhenKilledAndStops(t *testing.T) {
	command := zoneScript(t, false)
	a := sledagenttest.Start(t, func(c *config.Config) {
		processZones(t, command, c)
		// Slow enough to see the exit in the inventory before the restart.
		c.ReconcilerRetryInitial, c.ReconcilerRetryMax = config.Duration(time.Second), config.Duration(2*time.Second)
	})
	zone := a.Zone(oximeter, 1)
	a.Ensure(1, zone)
	a.WaitReconciled(1, sledagenttest.AllOK)
	first := onePid(t, zone.Id)
	log, err := os.ReadFile(filepath.Join(a.Config.ZoneRoot, zone.FilesystemPool, "zones", zone.Id, "zone.log"))
	if err != nil || !strings.Contains(string(log), "zone "+zone.Id+" up") {
		t.Fatalf("the zone's own log: %q, %v", log, err)
	}

	// Its process dies: the inventory says so, and the reconciler starts it
	// again after its backoff.
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if state, _ := zoneState(a.Inventory(), zone.Id); state != sledagentv1.ZoneState_ZONE_STATE_EXITED {
			return fmt.Errorf("zone is %s, waiting for EXITED", state)
		}
		return nil
	})
	testutil.WaitFor(t, 10*time.Second, func() error {
		if state, _ := zoneState(a.Inventory(), zone.Id); state != sledagentv1.ZoneState_ZONE_STATE_RUNNING {
			return fmt.Errorf("zone is %s, waiting for it to run again", state)
		}
		return nil
	})
	if again := onePid(t, zone.Id); again == first {
		t.Fatalf("the restarted zone has the dead process's pid %d", first)
	}

	// No longer wanted: its process is gone, and so is it from inventory.
	a.Ensure(2)
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if _, present := zoneState(inv, zone.Id); present {
			return fmt.Errorf("the zone is still listed")
		}
		return nil
	})
	if pids := zonePids(t, zone.Id); len(pids) != 0 {
		t.Fatalf("a zone absent from the inventory still runs in %v (Z6)", pids)
	}
}

func TestZ10_AZoneThatIgnoresSIGTERMIsKilledAfterTheBound(t *testing.T) {
	command := zoneScript(t, true)
	const bound = 700 * time.Millisecond
	a := sledagenttest.Start(t, func(c *config.Config) {
		processZones(t, command, c)
		c.ZoneStopTimeout = config.Duration(bound)
	})
	zone := a.Zone(oximeter, 1)
	a.Ensure(1, zone)
	a.WaitReconciled(1, sledagenttest.AllOK)
	onePid(t, zone.Id)
	began := time.Now()
	a.Ensure(2)
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if _, present := zoneState(inv, zone.Id); present {
			return fmt.Errorf("the zone is still listed")
		}
		return nil
	})
	if took := time.Since(began); took < bound {
		t.Fatalf("a zone that ignores SIGTERM was gone after %s, before the %s bound", took, bound)
	}
	if pids := zonePids(t, zone.Id); len(pids) != 0 {
		t.Fatalf("the zone still runs in %v after SIGKILL", pids)
	}
}

// Z5 with real processes: a shutdown that fails keeps the zone tracked and
// visible while its process lives, and a halt that hangs leaves it running.
func TestZ10_AZoneWhoseShutdownFailsStaysVisibleWhileItsProcessLives(t *testing.T) {
	command := zoneScript(t, false)
	a := sledagenttest.Start(t, func(c *config.Config) { processZones(t, command, c) })
	zone := a.Zone(oximeter, 1)
	a.Ensure(1, zone)
	a.WaitReconciled(1, sledagenttest.AllOK)
	pid := onePid(t, zone.Id)
	failShutdown(t, a, zone.Id, sledagentv1.ShutdownStep_SHUTDOWN_STEP_HALT_AND_REMOVE, 1000)
	a.Ensure(2)
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if state, _ := zoneState(inv, zone.Id); state != sledagentv1.ZoneState_ZONE_STATE_PARTIALLY_SHUT_DOWN {
			return fmt.Errorf("zone is %s, want PARTIALLY_SHUT_DOWN", state)
		}
		return nil
	})
	if got := onePid(t, zone.Id); got != pid {
		t.Fatalf("zone runs in %d, want its process %d, untouched", got, pid)
	}
	clearFaults(t, a)
	waitZoneGone(t, a, zone.Id)
}

func TestZ10_AZoneWhoseHaltHangsKeepsRunningUntilReleased(t *testing.T) {
	command := zoneScript(t, false)
	a := sledagenttest.Start(t, func(c *config.Config) { processZones(t, command, c) })
	zone := a.Zone(oximeter, 1)
	a.Ensure(1, zone)
	a.WaitReconciled(1, sledagenttest.AllOK)
	pid := onePid(t, zone.Id)
	if _, err := a.Sim.HangZoneShutdown(ctx, &sledagentv1.HangZoneShutdownRequest{ZoneId: zone.Id}); err != nil {
		t.Fatal(err)
	}
	a.Ensure(2)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if a.Inventory().GetReconcilerStatus().GetRunning().GetGeneration() != 2 {
			return fmt.Errorf("the pass of generation 2 is not under way")
		}
		return nil
	})
	if got := onePid(t, zone.Id); got != pid {
		t.Fatalf("a hung halt let zone %s's process %d go (now %d)", zone.Id, pid, got)
	}
	if _, err := a.Sim.ReleaseZoneShutdown(ctx, &sledagentv1.ReleaseZoneShutdownRequest{ZoneId: zone.Id}); err != nil {
		t.Fatal(err)
	}
	waitZoneGone(t, a, zone.Id)
}

// waitZoneGone waits until no process runs the zone and the inventory no
// longer lists it.
func waitZoneGone(t *testing.T, a *sledagenttest.Agent, id string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if pids := zonePids(t, id); len(pids) != 0 {
			return fmt.Errorf("zone still runs in %v", pids)
		}
		if _, present := zoneState(a.Inventory(), id); present {
			return fmt.Errorf("zone still listed")
		}
		return nil
	})
}

// waitReconciledOK waits until the agent's last pass reconciled generation
// and every zone in it is ok.
func waitReconciledOK(t *testing.T, client sledagentv1.SledAgentClient, generation uint64) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		inv, err := client.GetInventory(ctx, &sledagentv1.GetInventoryRequest{})
		if err != nil {
			return err
		}
		if inv.GetLastReconciliation().GetGeneration() != generation {
			return fmt.Errorf("generation %d not reconciled yet", generation)
		}
		return sledagenttest.AllOK(inv)
	})
}

// Z8 with real processes: a sled-agent killed with kill -9 leaves its zones
// running; the next one adopts them, exactly one process per zone, the
// same processes.
func TestZ10_ARestartedSledAgentAdoptsItsZoneProcessesAfterKill9(t *testing.T) {
	command := zoneScript(t, false)
	cfg := sledagenttest.Config(t)
	processZones(t, command, &cfg)
	agent := startProcess(t, cfg)
	client, closeConn := agent.client(t)
	zones := []*sledagentv1.OmicronZoneConfig{zoneOn(cfg, 1), zoneOn(cfg, 2)}
	if _, err := client.EnsureZones(ctx, &sledagentv1.EnsureZonesRequest{
		Config: &sledagentv1.OmicronZonesConfig{Generation: 1, Zones: zones}}); err != nil {
		t.Fatal(err)
	}
	// The processes are read once the agent says the zones run: on a
	// loaded machine a first start can miss its grace and be retried, and
	// the retry's process is the zone's.
	waitReconciledOK(t, client, 1)
	before := map[string]int{}
	for _, z := range zones {
		before[z.Id] = onePid(t, z.Id)
	}
	closeConn()
	agent.Kill()
	for _, z := range zones {
		if got := onePid(t, z.Id); got != before[z.Id] {
			t.Fatalf("zone %s runs in %d after the agent's kill -9, want %d", z.Id, got, before[z.Id])
		}
	}

	agent = startProcess(t, cfg)
	client, closeConn = agent.client(t)
	defer closeConn()
	waitReconciledOK(t, client, 1)
	for _, z := range zones {
		if got := zonePids(t, z.Id); len(got) != 1 || got[0] != before[z.Id] {
			t.Fatalf("after the restart zone %s runs in %v, want only its adopted process %d", z.Id, got, before[z.Id])
		}
	}
}

// A record's pid that now belongs to another process (the zone died while
// the agent was away, and the pid was handed out again) is not the zone: the
// agent starts the zone afresh and leaves that process alone.
func TestZ10_ARecycledPidIsNotAdopted(t *testing.T) {
	command := zoneScript(t, false)
	cfg := sledagenttest.Config(t)
	processZones(t, command, &cfg)
	agent := startProcess(t, cfg)
	client, closeConn := agent.client(t)
	zone := zoneOn(cfg, 1)
	if _, err := client.EnsureZones(ctx, &sledagentv1.EnsureZonesRequest{
		Config: &sledagentv1.OmicronZonesConfig{Generation: 1, Zones: []*sledagentv1.OmicronZoneConfig{zone}}}); err != nil {
		t.Fatal(err)
	}
	zonePid := onePid(t, zone.Id)
	closeConn()
	agent.Kill()
	if err := syscall.Kill(zonePid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	recPath := filepath.Join(cfg.ZoneRoot, zone.FilesystemPool, "zones", zone.Id, "zone.json")
	data, err := os.ReadFile(recPath)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	// Another process, which the record is made to name: as if the kernel
	// had given the dead zone's pid to it. A process's start time is in
	// clock ticks (10 ms): one started in the zone's own tick would be the
	// zone as far as anyone can tell, and no recycled pid comes back that
	// fast, so the stranger is one started in a later tick. (On a fast
	// machine the whole test fits in one tick: it failed 11 runs in 20.)
	var stranger *exec.Cmd
	testutil.WaitFor(t, 10*time.Second, func() error {
		stranger = exec.Command("sleep", "100000")
		if err := stranger.Start(); err != nil {
			t.Fatal(err)
		}
		cmd := stranger
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) //nolint:errcheck // cleanup
		ticks, err := process.StartTicks(stranger.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if float64(ticks) == rec["start_ticks"] {
			return fmt.Errorf("the stranger started in the zone's clock tick %d", ticks)
		}
		return nil
	})
	rec["pid"] = stranger.Process.Pid
	if data, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recPath, data, 0o644); err != nil {
		t.Fatal(err)
	}

	agent = startProcess(t, cfg)
	fresh := onePid(t, zone.Id)
	if fresh == stranger.Process.Pid || fresh == zonePid {
		t.Fatalf("the zone runs in %d; want a new process, not the stranger %d nor the dead %d", fresh, stranger.Process.Pid, zonePid)
	}
	if err := stranger.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the agent signalled the process that took the zone's pid: %v", err)
	}
	agent.Stop()
}

// zoneOn is an oximeter zone of the agent configured by cfg.
func zoneOn(cfg config.Config, n int) *sledagentv1.OmicronZoneConfig {
	return &sledagentv1.OmicronZoneConfig{Id: uuid.NewString(), Kind: oximeter, FilesystemPool: cfg.Zpools[0],
		Address: fmt.Sprintf("[fd00:1122:3344:101::%x]:12222", n)}
}

// scriptFile writes an executable shell script.
func scriptFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "zone.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// A zone whose process exits at once failed to start; its next try waits
// out the reconciler's backoff, drawn anew for each failure, instead of
// coming back as fast as the process dies.
func TestZ10_AZoneThatFailsToStartIsRetriedWithBackoff(t *testing.T) {
	starts := filepath.Join(t.TempDir(), "starts")
	command := scriptFile(t, "date +%s%N >> "+starts+"\nexit 1\n")
	const initial = 200 * time.Millisecond
	a := sledagenttest.Start(t, func(c *config.Config) {
		processZones(t, command, c)
		c.ReconcilerRetryInitial, c.ReconcilerRetryMax = config.Duration(initial), config.Duration(10*time.Second)
	})
	zone := a.Zone(oximeter, 1)
	a.Ensure(1, zone)
	var times []time.Time
	testutil.WaitFor(t, 30*time.Second, func() error {
		data, _ := os.ReadFile(starts)
		times = times[:0]
		for _, line := range strings.Fields(string(data)) {
			ns, err := strconv.ParseInt(line, 10, 64)
			if err != nil {
				return err
			}
			times = append(times, time.Unix(0, ns))
		}
		if len(times) < 4 {
			return fmt.Errorf("%d starts so far", len(times))
		}
		return nil
	})
	// Failure n waits at least initial·2^(n-1)·(1-jitter) before start n+1.
	for n := 1; n < 4; n++ {
		least := initial << (n - 1) / 2
		if gap := times[n].Sub(times[n-1]); gap < least {
			t.Errorf("start %d came %s after failure %d, before its backoff (at least %s)", n+1, gap, n, least)
		}
	}
	state, _ := zoneState(a.Inventory(), zone.Id)
	if state != sledagentv1.ZoneState_ZONE_STATE_FAILED_TO_START {
		t.Errorf("the zone is %s, want FAILED_TO_START", state)
	}
}

// zoneProcesses lists every live process that carries zone id in its
// environment, the zone's own and what it started.
func zoneProcesses(t *testing.T, id string) []int {
	t.Helper()
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil || len(stat) == 0 {
			continue
		}
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		if slices.ContainsFunc(bytes.Split(env, []byte{0}), func(kv []byte) bool { return string(kv) == "RACKPLANE_ZONE_ID="+id }) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// A zone is every process it started: when its own process dies, what it
// left behind is stopped before the zone starts again, so the zone never
// runs twice; and a halt waits for all of them, SIGKILLing a child that
// ignores SIGTERM, before the zone leaves the inventory (Z6).
func TestZ10_AZonesLeftoverProcessesAreStoppedBeforeItRunsAgainOrLeaves(t *testing.T) {
	// The shell leads; its child ignores SIGTERM and outlives it.
	command := scriptFile(t, "sh -c \"trap '' TERM; exec sleep 100000\" &\nwait\n")
	a := sledagenttest.Start(t, func(c *config.Config) {
		processZones(t, command, c)
		c.ZoneStopTimeout = config.Duration(500 * time.Millisecond)
		c.ReconcilerRetryInitial, c.ReconcilerRetryMax = config.Duration(100*time.Millisecond), config.Duration(time.Second)
	})
	zone := a.Zone(oximeter, 1)
	a.Ensure(1, zone)
	a.WaitReconciled(1, sledagenttest.AllOK)
	var first []int
	testutil.WaitFor(t, 10*time.Second, func() error {
		if first = zoneProcesses(t, zone.Id); len(first) != 2 {
			return fmt.Errorf("zone runs in %v, want its shell and the shell's child", first)
		}
		return nil
	})
	leader := onePid(t, zone.Id)
	if err := syscall.Kill(leader, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		now := zoneProcesses(t, zone.Id)
		for _, pid := range first {
			if slices.Contains(now, pid) && len(now) > 1 {
				return fmt.Errorf("zone runs in %v; the child %d of its dead process is still there", now, pid)
			}
		}
		if len(now) != 2 {
			return fmt.Errorf("zone runs in %v, waiting for one new shell and its child", now)
		}
		return nil
	})
	a.Ensure(2)
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if _, present := zoneState(inv, zone.Id); present {
			return fmt.Errorf("the zone is still listed")
		}
		return nil
	})
	if left := zoneProcesses(t, zone.Id); len(left) != 0 {
		t.Fatalf("the zone left the inventory while %v of its processes still run (Z6)", left)
	}
}

// A sled-agent killed after it started a zone's process but before it wrote
// the pid down leaves a record without one: the next agent finds the
// process by the zone's id in its environment and stops it before it starts
// the zone, so the zone runs once.
func TestZ10_AZoneWhoseStartWasInterruptedRunsOnce(t *testing.T) {
	command := zoneScript(t, false)
	cfg := sledagenttest.Config(t)
	processZones(t, command, &cfg)
	zone := zoneOn(cfg, 1)
	agent := startProcess(t, cfg)
	client, closeConn := agent.client(t)
	if _, err := client.EnsureZones(ctx, &sledagentv1.EnsureZonesRequest{
		Config: &sledagentv1.OmicronZonesConfig{Generation: 1, Zones: []*sledagentv1.OmicronZoneConfig{zone}}}); err != nil {
		t.Fatal(err)
	}
	pid := onePid(t, zone.Id)
	closeConn()
	agent.Kill()
	// As if the kill had come between the start and the record of its pid.
	recPath := filepath.Join(cfg.ZoneRoot, zone.FilesystemPool, "zones", zone.Id, "zone.json")
	data, err := os.ReadFile(recPath)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	rec["pid"], rec["start_ticks"] = 0, 0
	if data, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recPath, data, 0o644); err != nil {
		t.Fatal(err)
	}

	agent = startProcess(t, cfg)
	testutil.WaitFor(t, 20*time.Second, func() error {
		now := zonePids(t, zone.Id)
		if len(now) != 1 || now[0] == pid {
			return fmt.Errorf("zone runs in %v, waiting for one new process instead of %d", now, pid)
		}
		return nil
	})
	agent.Stop()
}

// Exits in a row lengthen the backoff, but a zone that then ran for longer
// than the longest backoff starts counting anew when it exits again.
func TestZ10_AZoneThatRanLongerThanTheLongestBackoffCountsItsExitsAnew(t *testing.T) {
	command := zoneScript(t, false)
	const longest = 400 * time.Millisecond
	a := sledagenttest.Start(t, func(c *config.Config) {
		processZones(t, command, c)
		c.ReconcilerRetryInitial, c.ReconcilerRetryMax = config.Duration(100*time.Millisecond), config.Duration(longest)
	})
	zone := a.Zone(oximeter, 1)
	a.Ensure(1, zone)
	a.WaitReconciled(1, sledagenttest.AllOK)
	exitsAfterKill := func() uint32 {
		t.Helper()
		pid := onePid(t, zone.Id)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var attempts uint32
		testutil.WaitFor(t, 10*time.Second, func() error {
			for _, z := range a.Inventory().GetLastReconciliation().GetZones() {
				if z.GetZoneId() == zone.Id && z.GetError().GetState() == sledagentv1.ZoneState_ZONE_STATE_EXITED {
					attempts = z.GetError().GetAttempts()
					return nil
				}
			}
			return fmt.Errorf("zone not seen exited yet")
		})
		a.WaitReconciled(1, sledagenttest.AllOK)
		return attempts
	}
	for want := uint32(1); want <= 3; want++ {
		if got := exitsAfterKill(); got != want {
			t.Fatalf("exit %d in a row is counted %d", want, got)
		}
	}
	ranSince := time.Now()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if ran := time.Since(ranSince); ran <= 2*longest {
			return fmt.Errorf("the zone has run for %s of the %s that make its exits forgotten", ran, 2*longest)
		}
		return nil
	})
	if got := exitsAfterKill(); got != 1 {
		t.Fatalf("an exit after running %s is counted %d, want 1 (a fresh count)", 2*longest, got)
	}
}

// Two sled-agents on one sled's state would adopt and stop each other's
// zones and write over each other's ledgers: the second is refused, naming
// the directory and the first one's pid, and the first goes on undisturbed.
// Its kill -9 frees the state for the next agent.
func TestZ8_ASecondSledAgentOnTheSameStateIsRefused(t *testing.T) {
	cfg := sledagenttest.Config(t)
	processZones(t, zoneScript(t, false), &cfg)
	first := startProcess(t, cfg)
	second := cfg
	second.ListenAddress = "127.0.0.1:0"
	p := racktest.NewProcess(t, "sled-agent-2", racktest.Build(t, racktest.SledAgentBinary), second.Args()...)
	p.Start()
	select {
	case <-p.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("a second sled-agent on the same state kept running")
	}
	if log := p.Log(); !strings.Contains(log, "in use by another sled-agent (pid "+strconv.Itoa(first.Pid())+")") {
		t.Fatalf("the second sled-agent's refusal does not name the first:\n%s", log)
	}
	first.Kill()
	startProcess(t, cfg).Stop()
}

// A zone's process is known by its zone's directory as well as its id: two
// sled-agents on one machine (two local clusters) that run zones of the
// same id each see their own only, and stopping one leaves the other.
func TestZ10_ZonesOfTheSameIDUnderTwoAgentsAreEachTheirOwn(t *testing.T) {
	command := zoneScript(t, false)
	first := sledagenttest.Start(t, func(c *config.Config) { processZones(t, command, c) })
	second := sledagenttest.Start(t, func(c *config.Config) { processZones(t, command, c) })
	zone := first.Zone(oximeter, 1)
	twin := second.Zone(oximeter, 1)
	twin.Id = zone.Id
	first.Ensure(1, zone)
	second.Ensure(1, twin)
	first.WaitReconciled(1, sledagenttest.AllOK)
	second.WaitReconciled(1, sledagenttest.AllOK)
	if pids := zonePids(t, zone.Id); len(pids) != 2 {
		t.Fatalf("zone %s runs in %v, want one process under each agent", zone.Id, pids)
	}
	second.Ensure(2)
	waitZoneGoneFrom(t, second, zone.Id)
	first.WaitReconciled(1, sledagenttest.AllOK)
	if pids := zonePids(t, zone.Id); len(pids) != 1 {
		t.Fatalf("after the second agent stopped its zone, zone %s runs in %v; want the first agent's still", zone.Id, pids)
	}
}

// waitZoneGoneFrom waits until an agent's inventory no longer lists a zone.
func waitZoneGoneFrom(t *testing.T, a *sledagenttest.Agent, id string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if _, present := zoneState(a.Inventory(), id); present {
			return fmt.Errorf("zone still listed")
		}
		return nil
	})
}

// A child that leaves the zone's process group and clears its environment
// is still the zone's, as its descendant: the zone does not leave the
// inventory while it runs (Z6).
func TestZ10_AChildThatClearsItsEnvironmentIsStillTheZones(t *testing.T) {
	testutil.RequireCommand(t, "setsid")
	command := scriptFile(t, "setsid env -i /bin/sh -c 'exec sleep 100001' &\necho $! > \"$RACKPLANE_ZONE_DIR/child.pid\"\nexec sleep 100000\n")
	a := sledagenttest.Start(t, func(c *config.Config) {
		processZones(t, command, c)
		c.ZoneStopTimeout = config.Duration(time.Second)
	})
	zone := a.Zone(oximeter, 1)
	a.Ensure(1, zone)
	a.WaitReconciled(1, sledagenttest.AllOK)
	pidFile := filepath.Join(a.Config.ZoneRoot, zone.FilesystemPool, "zones", zone.Id, "child.pid")
	var child int
	testutil.WaitFor(t, 10*time.Second, func() error {
		data, err := os.ReadFile(pidFile)
		if err == nil {
			child, err = strconv.Atoi(strings.TrimSpace(string(data)))
		}
		return err
	})
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) }) //nolint:errcheck // gone already, if the test passed
	a.Ensure(2)
	waitZoneGoneFrom(t, a, zone.Id)
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child)); err == nil && !bytes.Contains(stat, []byte(") Z ")) {
		t.Fatalf("the zone left the inventory while its child %d still runs: %s", child, stat)
	}
}

// A zone whose record the agent cannot read (torn, corrupted) is not
// adopted; its process is still the zone's, by its environment, and is
// stopped before the zone starts again, so the zone runs once.
func TestZ10_AZoneWhoseRecordIsUnreadableIsStoppedBeforeItStartsAgain(t *testing.T) {
	command := zoneScript(t, false)
	cfg := sledagenttest.Config(t)
	processZones(t, command, &cfg)
	zone := zoneOn(cfg, 1)
	agent := startProcess(t, cfg)
	client, closeConn := agent.client(t)
	if _, err := client.EnsureZones(ctx, &sledagentv1.EnsureZonesRequest{
		Config: &sledagentv1.OmicronZonesConfig{Generation: 1, Zones: []*sledagentv1.OmicronZoneConfig{zone}}}); err != nil {
		t.Fatal(err)
	}
	pid := onePid(t, zone.Id)
	closeConn()
	agent.Kill()
	recPath := filepath.Join(cfg.ZoneRoot, zone.FilesystemPool, "zones", zone.Id, "zone.json")
	if err := os.WriteFile(recPath, []byte("{torn"), 0o644); err != nil {
		t.Fatal(err)
	}
	agent = startProcess(t, cfg)
	testutil.WaitFor(t, 20*time.Second, func() error {
		now := zonePids(t, zone.Id)
		if len(now) != 1 || now[0] == pid {
			return fmt.Errorf("zone runs in %v, waiting for one new process instead of %d", now, pid)
		}
		return nil
	})
	agent.Stop()
}
