package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/nexustest"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

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
	bin := buildNexus(t)
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
	for _, backend := range nexustest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			// Each case has its own processes, ports, database and sleds,
			// so the two backends run side by side.
			t.Parallel()
			var seen []string
			for _, node := range nodes {
				for _, at := range []string{"before", "after"} {
					point := crashPoint{Template: sagas.InstanceStart, Node: node, After: at == "after"}
					t.Run(node+"-"+at, func(t *testing.T) {
						got := crashAndRecover(t, bin, backend, point, nil)
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
	bin := buildNexus(t)
	faults := []*fault{
		{name: "ensure-state-fails", whileDown: func(t *testing.T, s *sled, vmm string) {
			if _, err := s.agent.Sim.FailEnsureState(bg, &sledagentv1.FailEnsureStateRequest{VmmId: vmm, Count: 1,
				Code: uint32(codes.Unavailable), Message: "injected while nexus was down"}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "sled-forgot-vmm", whileDown: func(t *testing.T, s *sled, vmm string) {
			if _, err := s.agent.Sim.ForgetVmm(bg, &sledagentv1.ForgetVmmRequest{VmmId: vmm}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, backend := range nexustest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			t.Parallel()
			for _, f := range faults {
				for _, at := range []string{"before", "after"} {
					point := crashPoint{Template: sagas.InstanceStart, Node: "ensure_running", After: at == "after"}
					t.Run(f.name+"-"+point.Node+"-"+at, func(t *testing.T) {
						if got := crashAndRecover(t, bin, backend, point, f); !strings.HasPrefix(got, "unwound") {
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
	whileDown func(t *testing.T, s *sled, vmm string)
	// afterRestart, if set, runs once the restarted nexus listens.
	afterRestart func(t *testing.T, s *sled, ds *datastore.DataStore, sagaID uuid.UUID)
}

// crashAndRecover runs one case and describes its outcome. f, if not nil,
// is done to the sled holding the saga's VMM.
func crashAndRecover(t *testing.T, bin string, backend datastore.Backend, point crashPoint, f *fault) string {
	r := newRack(t, bin, backend)

	// The first nexus, armed: the saga started by the create stops at the
	// crash point, and the create request hangs until nexus dies.
	first := r.startNexus(t, "--crash-point", point.String())
	r.startSleds(t, 2)
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
	line := first.waitLog(t, crashPointMessage, crashTimeout, created)
	sagaID, err := uuid.Parse(fmt.Sprint(line["saga_id"]))
	if err != nil || line["node"] != point.Node {
		t.Fatalf("crash point line %v: want a saga id and node %s", line, point.Node)
	}
	first.kill(t)
	<-created // the request dies with the process; its answer says nothing

	ds, err := datastore.Open(bg, backend, r.dbURL, zap.NewNop())
	if err != nil {
		t.Fatalf("opening the database: %v", err)
	}
	t.Cleanup(func() { ds.Close() })
	rec, err := ds.SagaGet(bg, sagaID)
	if err != nil || rec.State != saga.StateRunning || rec.Owner != r.nexusID || rec.Template != sagas.InstanceStart {
		t.Fatalf("after the kill the saga is %+v (%v); want it running, owned by the dead nexus %s", rec, err, r.nexusID)
	}
	var params sagas.InstanceStartParams
	if err := json.Unmarshal(rec.Params, &params); err != nil {
		t.Fatal(err)
	}
	atKill := fmt.Sprintf("%d VMM(s) on the sleds", len(r.sledVMMs(t)))
	var faulty *sled
	if f != nil {
		// The sled the saga allocated (faults need a crash point after
		// alloc_vmm), whether or not it has the VMM yet.
		v, err := ds.VMMGet(bg, params.VMM)
		if err != nil {
			t.Fatalf("the saga's VMM %s: %v", params.VMM, err)
		}
		for _, s := range r.sleds {
			if s.agent.Config.SledID == v.SledID.String() {
				faulty = s
			}
		}
		f.whileDown(t, faulty, params.VMM.String())
	}

	// The same nexus again, unarmed, on the same addresses and database.
	restarting := time.Now()
	second := r.startNexus(t)
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
		t.Fatalf("saga %s ended %s; want done or unwound\n%s", sagaID, rec.State, second.log)
	}
	if left, err := ds.SagaListUnfinished(bg, r.nexusID); err != nil || len(left) != 0 {
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
	for _, s := range r.sleds {
		s.agent.Stop()
	}
	second.stop(t)
	t.Logf("%s: saga %s %s after the restart (at the kill: %s; nexus listening %s and the saga finished %s after the restart)",
		point, sagaID, outcome, atKill, listening.Round(time.Millisecond), finished.Round(time.Millisecond))
	return outcome
}

// rack is one case's world: a database, the fixed addresses every nexus
// process of the case listens on, a token, and in-process sled-agents that
// keep pointing at the same internal address across restarts.
type rack struct {
	bin      string
	backend  datastore.Backend
	dbURL    string
	nexusID  uuid.UUID
	internal string
	external string
	api      *oxide.Client
	sleds    []*sled
}

// sled is an in-process sled-agent that nexus reaches through a proxy the
// test can cut, as a network partition would.
type sled struct {
	agent *sledagenttest.Agent
	proxy *tcpProxy
}

func newRack(t *testing.T, bin string, backend datastore.Backend) *rack {
	t.Helper()
	addrs := freeAddrs(t, 2)
	r := &rack{bin: bin, backend: backend, nexusID: uuid.New(), internal: addrs[0], external: addrs[1]}
	if backend == datastore.SQLite {
		r.dbURL = filepath.Join(t.TempDir(), "nexus.db")
	} else {
		r.dbURL = pgtest.DSN(t)
	}
	// As an operator would: the token goes straight into the database,
	// which this also creates and migrates.
	ctx, cancel := context.WithTimeout(bg, processStartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "token", "create", "--id", r.nexusID.String(), "--database-backend", string(backend),
		"--database-url", r.dbURL, "--principal", "recovery-test", "--fleet-admin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nexus token create: %v\n%s", err, stderr.String())
	}
	api, err := oxide.NewClient(oxide.WithHost("http://"+r.external), oxide.WithToken(strings.TrimSpace(string(out))),
		oxide.WithTimeout(settleTimeout))
	if err != nil {
		t.Fatal(err)
	}
	r.api = api
	return r
}

// startNexus starts a nexus process of the rack and waits until it listens.
func (r *rack) startNexus(t *testing.T, extra ...string) *nexusProcess {
	t.Helper()
	// Only the addresses sleds and clients use are fixed; the others (the
	// metrics listener's default port, say) must not collide across cases.
	args := append([]string{"--id", r.nexusID.String(), "--internal-listen", r.internal, "--external-listen", r.external,
		"--external-grpc-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--database-backend", string(r.backend), "--database-url", r.dbURL, "--log-format", "json", "--log-level", "info"},
		extra...)
	p := startProcess(t, r.bin, args...)
	p.waitLog(t, "nexus listening", processStartTimeout, nil)
	return p
}

// startSleds starts n sled-agents pointed at the rack's internal address
// and waits until nexus lists them all.
func (r *rack) startSleds(t *testing.T, n int) {
	t.Helper()
	for range n {
		addrs := freeAddrs(t, 2)
		s := &sled{proxy: startProxy(t, addrs[1], addrs[0])}
		s.agent = sledagenttest.Start(t, func(c *sledconfig.Config) {
			c.ListenAddress, c.AdvertiseAddress = addrs[0], addrs[1]
			c.NexusAddress = r.internal
			c.HeartbeatPeriod = sledconfig.Duration(100 * time.Millisecond)
			c.PublishRetryInitial = sledconfig.Duration(5 * time.Millisecond)
			c.PublishRetryMax = sledconfig.Duration(50 * time.Millisecond)
			c.HypervisorMode = "auto"
			c.VMMTransitionDelay = sledconfig.Duration(5 * time.Millisecond)
		})
		r.sleds = append(r.sleds, s)
	}
	testutil.WaitFor(t, processStartTimeout, func() error {
		page, err := r.api.SledList(bg, oxide.SledListParams{})
		if err != nil {
			return err
		}
		if len(page.Items) != n {
			return fmt.Errorf("nexus lists %d of %d sleds", len(page.Items), n)
		}
		return nil
	})
}

// sledVMMs asks every sled-agent, over gRPC, which VMMs it has registered:
// VMM id → sled id.
func (r *rack) sledVMMs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range r.sleds {
		inv := s.agent.Inventory()
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
	for _, s := range r.sleds {
		inv := s.agent.Inventory()
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

var built struct {
	once      sync.Once
	dir, path string
	err       error
}

// buildNexus builds this command once per test run (without -race: the
// processes under test are nexus as shipped); TestMain removes it.
func buildNexus(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "nexus-bin-"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "nexus")
		if out, err := exec.Command("go", "build", "-o", built.path, ".").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// freeAddrs picks n distinct free loopback ports for processes to listen
// on, the same ones across their restarts. They are drawn below the
// kernel's ephemeral range, so that no outgoing connection and no listener
// on port 0 (other tests run alongside) can take one while its process is
// down; the ports the repository's defaults use (12220-12345) are below
// the range drawn from.
// handedOut are the ports freeAddrs gave out in this test process: cases run
// in parallel and bind their ports later, so a port once handed out is
// never drawn again.
var handedOut = struct {
	sync.Mutex
	ports map[string]bool
}{ports: map[string]bool{}}

func claimPort(addr string) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports[addr] {
		return false
	}
	handedOut.ports[addr] = true
	return true
}

func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	low := 32768
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 16000 {
				low = v
			}
		}
	}
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries == 1000 {
			t.Fatalf("no free port below %d after %d tries", low, tries)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", low-15000+rand.IntN(15000))
		if !claimPort(addr) {
			continue // handed to a parallel case already, which may not have bound it yet
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken; draw again
		}
		defer l.Close() // held until all n are drawn, so they differ
		out = append(out, addr)
	}
	return out
}

// nexusProcess is nexus running as its own process, with its JSON log.
type nexusProcess struct {
	cmd    *exec.Cmd
	log    *lineBuffer
	exited chan struct{}
	err    error // set before exited closes
}

func startProcess(t *testing.T, bin string, args ...string) *nexusProcess {
	t.Helper()
	cmd := exec.Command(bin, args...)
	// A test binary that dies must not leave nexus processes behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &nexusProcess{cmd: cmd, log: &lineBuffer{}, exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			p.log.add(sc.Text())
		}
		io.Copy(io.Discard, pipe) //nolint:errcheck // draining a pipe whose reader gave up
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill() //nolint:errcheck // it may have exited meanwhile
			<-p.exited
		}
	})
	return p
}

// waitLog waits for a log line whose message contains msg and returns its
// fields; the process exiting first, or failed receiving an error, fails
// the test.
func (p *nexusProcess) waitLog(t *testing.T, msg string, timeout time.Duration, failed <-chan error) map[string]any {
	t.Helper()
	var found map[string]any
	testutil.WaitFor(t, timeout, func() error {
		for _, line := range p.log.lines() {
			var fields map[string]any
			if json.Unmarshal([]byte(line), &fields) == nil && strings.Contains(fmt.Sprint(fields["msg"]), msg) {
				found = fields
				return nil
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("nexus exited (%v) before logging %q:\n%s", p.err, msg, p.log)
		case err := <-failed:
			t.Fatalf("the request ended (%v) before nexus logged %q:\n%s", err, msg, p.log)
		default:
		}
		return fmt.Errorf("nexus has not logged %q", msg)
	})
	return found
}

// kill is kill -9.
func (p *nexusProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	var exit *exec.ExitError
	if !errors.As(p.err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("nexus did not die of SIGKILL: %v", p.err)
	}
}

// stop is a graceful stop, which must succeed.
func (p *nexusProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(processStartTimeout):
		t.Fatalf("nexus did not stop within %s of SIGTERM:\n%s", processStartTimeout, p.log)
	}
	if p.err != nil {
		t.Fatalf("nexus stopped with %v:\n%s", p.err, p.log)
	}
}

// lineBuffer keeps a process's log lines for the test to search and print.
type lineBuffer struct {
	mu  sync.Mutex
	all []string
}

func (b *lineBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all = append(b.all, line)
}

func (b *lineBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.all...)
}

func (b *lineBuffer) String() string { return strings.Join(b.lines(), "\n") }
