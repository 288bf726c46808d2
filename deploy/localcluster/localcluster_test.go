package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/services/racktest"
)

// readyTimeout covers the launcher's go build of nexus and sled-agent, which
// on an empty build cache compiles gRPC and SQLite (a minute or two on two
// cores); with a warm cache a start takes seconds.
const (
	readyTimeout = 5 * time.Minute
	exitTimeout  = 30 * time.Second
)

func TestLocalClusterStartsAndStops(t *testing.T) {
	launcher := buildLauncher(t)
	dir := filepath.Join(t.TempDir(), "cluster")
	lc := startLauncher(t, launcher, "--dir", dir, "--api-port", strconv.Itoa(freePort(t)))

	if ids := lc.sledIDs(t); len(ids) != 2 {
		t.Fatalf("nexus lists %d sleds, want 2: %v", len(ids), ids)
	}
	metrics := lc.get(t, lc.metrics)
	if !strings.Contains(metrics, `nexus_http_requests_total{code="200",method="GET",route="/v1/system/hardware/sleds"}`) {
		t.Errorf("nexus's metrics at %s do not count the sled listings:\n%s", lc.metrics, metrics)
	}
	if len(lc.pids) != 3 || lc.pids["nexus-1"] == 0 {
		t.Fatalf("launcher reported %v, want 2 sled-agents and the nexus-1 zone", lc.pids)
	}
	for _, name := range []string{"sled-agent-1", "sled-agent-2", "rack-setup"} {
		if _, err := os.Stat(filepath.Join(dir, "logs", name+".log")); err != nil {
			t.Errorf("no log for %s: %v", name, err)
		}
	}
	// Z11: the replica is a zone of the first sled, as its plan says.
	ppid := parentOf(t, lc.pids["nexus-1"])
	if ppid != lc.pids["sled-agent-1"] {
		t.Errorf("nexus-1 (pid %d) is a child of pid %d, want sled-agent-1 (pid %d)", lc.pids["nexus-1"], ppid, lc.pids["sled-agent-1"])
	}
	// rackctl, built with the cluster, finds it through the config file
	// the launcher wrote for it, which only its owner may read (a token).
	rackctlConfig := filepath.Join(dir, "rackctl.yaml")
	if info, err := os.Stat(rackctlConfig); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("rackctl's config file: %v, %v; want mode 0600", info, err)
	}
	rackctl := exec.Command(filepath.Join(dir, "bin", "rackctl"), "sled", "list")
	rackctl.Env = append(os.Environ(), "RACKPLANE_CONFIG="+rackctlConfig)
	out, err := rackctl.CombinedOutput()
	for _, id := range lc.sledIDs(t) {
		if err != nil || !strings.Contains(string(out), id) {
			t.Errorf("rackctl sled list with the cluster's config lacks sled %s: %v\n%s", id, err, out)
		}
	}
	if !strings.Contains(lc.output(), "export RACKPLANE_CONFIG="+rackctlConfig) {
		t.Errorf("the launcher does not say how to use rackctl:\n%s", lc.output())
	}

	lc.stop(t)
}

// A restart without --fresh keeps nexus's database: what was created before
// is still there, the same two sleds are listed, and the new token works.
func TestLocalClusterRestartKeepsItsState(t *testing.T) {
	launcher := buildLauncher(t)
	dir := filepath.Join(t.TempDir(), "cluster")
	ports := []string{"--api-port", strconv.Itoa(freePort(t)), "--metrics-port", strconv.Itoa(freePort(t))}

	first := startLauncher(t, launcher, append([]string{"--dir", dir}, ports...)...)
	first.do(t, "POST", "/v1/projects", `{"name": "kept", "description": ""}`, http.StatusCreated)

	// Someone gave sled-agent-2 a newer zones config by hand: the restart
	// leaves it as it is instead of failing on it.
	// As the operator the launcher issued a certificate to (S4).
	operator, err := rackpki.LoadDir(filepath.Join(dir, "pki", "operator"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpcconn.Dial(first.sledAddrs["sled-agent-2"], operator, rackpki.Identity{Kind: rackpki.Sled}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := sledagentv1.NewSledAgentClient(conn).EnsureZones(context.Background(), &sledagentv1.EnsureZonesRequest{
		Config: &sledagentv1.OmicronZonesConfig{Generation: 2}}); err != nil {
		t.Fatal(err)
	}
	first.stop(t)

	// The ports are the rack's: a restart need not repeat them.
	second := startLauncher(t, launcher, "--dir", dir)
	if second.url != first.url || second.metrics != first.metrics {
		t.Errorf("the restart serves at %s, %s; want the rack's %s, %s", second.url, second.metrics, first.url, first.metrics)
	}
	if second.token == first.token {
		t.Errorf("the restart reused the token; want a new one each start")
	}
	if ids, before := second.sledIDs(t), first.sledIDs(t); !slices.Equal(sorted(ids), sorted(before)) {
		t.Fatalf("after a restart nexus lists sleds %v, want the same %v", ids, before)
	}
	body := second.do(t, "GET", "/v1/projects", "", http.StatusOK)
	if !strings.Contains(body, `"kept"`) {
		t.Errorf("project made before the restart is gone: %s", body)
	}
	second.stop(t)

	out, err := exec.Command(launcher, "--dir", dir, "--api-port", strconv.Itoa(freePort(t))).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "was set up with its API on port") {
		t.Errorf("a restart on other ports: %v\n%s; want a refusal naming the rack's ports", err, out)
	}

	third := startLauncher(t, launcher, append([]string{"--dir", dir, "--fresh"}, ports...)...)
	if body := third.do(t, "GET", "/v1/projects", "", http.StatusOK); strings.Contains(body, `"kept"`) {
		t.Errorf("--fresh kept the old database: %s", body)
	}
	third.stop(t)
}

// With --postgres the cluster is three sleds each running a replica over
// one database: each replica serves the same rack.
func TestLocalClusterWithPostgresRunsAReplicaOnEachSled(t *testing.T) {
	pgtest.RequireServerBinaries(t)
	launcher := buildLauncher(t)
	port := freePort(t)
	lc := startLauncher(t, launcher, "--dir", filepath.Join(t.TempDir(), "cluster"), "--api-port", strconv.Itoa(port), "--postgres")

	for _, name := range []string{"sled-agent-1", "sled-agent-2", "sled-agent-3", "nexus-1", "nexus-2", "nexus-3"} {
		if lc.pids[name] == 0 {
			t.Fatalf("launcher did not report %s: %v", name, lc.pids)
		}
	}
	if ids := lc.sledIDs(t); len(ids) != 3 {
		t.Fatalf("nexus lists %d sleds, want 3: %v", len(ids), ids)
	}
	replica := func(k int) *racktest.Client {
		return racktest.NewClient(fmt.Sprintf("http://127.0.0.1:%d", port+10*k), lc.token)
	}
	replica(1).MustCall(t, "POST", "/v1/projects", `{"name": "shared", "description": ""}`, http.StatusCreated)
	if body := string(replica(2).MustCall(t, "GET", "/v1/projects", "", http.StatusOK).Body); !strings.Contains(body, `"shared"`) {
		t.Errorf("the third replica does not list the project made through the second: %s", body)
	}
	lc.stop(t)
}

func sorted(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// Two clusters on one machine, in two state directories, are two racks:
// each has its own ids, its sled-agents see their own zones only, and
// stopping one leaves the other serving.
func TestLocalClusterTwoClustersOnOneMachineKeepApart(t *testing.T) {
	launcher := buildLauncher(t)
	a := startLauncher(t, launcher, "--dir", filepath.Join(t.TempDir(), "a"), "--api-port", strconv.Itoa(freePort(t)))
	b := startLauncher(t, launcher, "--dir", filepath.Join(t.TempDir(), "b"), "--api-port", strconv.Itoa(freePort(t)))
	idsA, idsB := a.sledIDs(t), b.sledIDs(t)
	for _, id := range idsA {
		if slices.Contains(idsB, id) {
			t.Fatalf("both clusters have sled %s", id)
		}
	}
	b.stop(t)
	if err := syscall.Kill(a.pids["nexus-1"], 0); err != nil {
		t.Fatalf("stopping the second cluster stopped the first one's nexus: %v", err)
	}
	if ids := a.sledIDs(t); !slices.Equal(sorted(ids), sorted(idsA)) {
		t.Fatalf("after the second cluster stopped, the first lists %v, want %v", ids, idsA)
	}
	a.stop(t)
}

// The state directory is its resolved path, however it is reached: a
// cluster started through a symbolic link starts again through the real
// path (the rack's plan names the database by that path). A state
// directory keeps its mode: a --postgres cluster's is not started as a
// SQLite one.
func TestLocalClusterStateIsItsDirectoryWhateverPathReachesIt(t *testing.T) {
	pgtest.RequireServerBinaries(t)
	launcher := buildLauncher(t)
	real := filepath.Join(t.TempDir(), "real")
	link := filepath.Join(t.TempDir(), "link")
	if err := os.MkdirAll(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	ports := []string{"--api-port", strconv.Itoa(freePort(t)), "--metrics-port", strconv.Itoa(freePort(t))}
	startLauncher(t, launcher, append([]string{"--dir", link}, ports...)...).stop(t)
	startLauncher(t, launcher, "--dir", real).stop(t)

	pg := filepath.Join(t.TempDir(), "pg")
	startLauncher(t, launcher, "--dir", pg, "--postgres", "--api-port", strconv.Itoa(freePort(t))).stop(t)
	out, err := exec.Command(launcher, "--dir", pg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "holds a postgres cluster") {
		t.Fatalf("a --postgres cluster's state started as a SQLite one: %v\n%s", err, out)
	}
}

// One state directory serves one launcher: a second is refused, naming the
// first, and leaves the first running.
func TestLocalClusterRefusesASecondLauncherOnItsState(t *testing.T) {
	launcher := buildLauncher(t)
	dir := filepath.Join(t.TempDir(), "cluster")
	lc := startLauncher(t, launcher, "--dir", dir, "--api-port", strconv.Itoa(freePort(t)))
	out, err := exec.Command(launcher, "--dir", dir, "--api-port", strconv.Itoa(freePort(t)), "--metrics-port",
		strconv.Itoa(freePort(t))).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another local cluster (pid "+strconv.Itoa(lc.cmd.Process.Pid)+")") {
		t.Fatalf("a second launcher on the same state: %v\n%s", err, out)
	}
	if ids := lc.sledIDs(t); len(ids) != 2 {
		t.Fatalf("the first cluster lists %v after the refusal", ids)
	}
	lc.stop(t)
}

// A launcher killed with SIGKILL takes its sled-agents with it, but their
// nexus zone lives on (zones outlive their agent); a --fresh start stops it
// before it wipes the state, so the old replica neither holds the ports nor
// passes for the new one.
func TestLocalClusterFreshStartStopsTheZonesAKilledLauncherLeft(t *testing.T) {
	launcher := buildLauncher(t)
	dir := filepath.Join(t.TempDir(), "cluster")
	ports := []string{"--api-port", strconv.Itoa(freePort(t)), "--metrics-port", strconv.Itoa(freePort(t))}
	first := startLauncher(t, launcher, append([]string{"--dir", dir}, ports...)...)
	old := first.pids["nexus-1"]
	first.cmd.Process.Kill() //nolint:errcheck // checked by the wait
	first.wait(t)
	if err := syscall.Kill(old, 0); err != nil {
		t.Fatalf("the nexus zone died with the launcher (%v); this test wants it left running", err)
	}
	second := startLauncher(t, launcher, append([]string{"--dir", dir, "--fresh"}, ports...)...)
	if second.pids["nexus-1"] == old {
		t.Fatalf("the fresh cluster reports the old nexus zone %d as its own", old)
	}
	if err := syscall.Kill(old, 0); !errors.Is(err, syscall.ESRCH) {
		state, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", old))
		t.Errorf("the old nexus zone %d still exists after the fresh start (%v; %s)", old, err, state)
	}
	if ids := second.sledIDs(t); len(ids) != 2 {
		t.Fatalf("the fresh cluster lists %v", ids)
	}
	second.stop(t)
}

func TestLocalClusterStopsEverythingWhenAChildDies(t *testing.T) {
	launcher := buildLauncher(t)
	lc := startLauncher(t, launcher, "--dir", filepath.Join(t.TempDir(), "cluster"), "--api-port", strconv.Itoa(freePort(t)))

	if err := syscall.Kill(lc.pids["sled-agent-2"], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := lc.wait(t); code == 0 {
		t.Fatalf("launcher exited 0 after a sled-agent died, want non-zero")
	}
	stderr := lc.stderr()
	for _, want := range []string{"sled-agent-2 exited unexpectedly", "last lines of"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	lc.assertChildrenGone(t)
}

// launcherRun is one launcher process and what it printed.
type launcherRun struct {
	cmd        *exec.Cmd
	stderrPath string
	exited     chan struct{} // closed once the launcher is reaped
	exitCode   int
	ready      chan struct{} // closed at the end of the ready block; what it says is parsed before

	mu        sync.Mutex
	stdout    []byte // everything printed, for failure reports
	partial   []byte // an unfinished line
	url       string
	token     string
	metrics   string
	pids      map[string]int
	sledAddrs map[string]string // sled-agent name → gRPC address
}

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

func buildLauncher(t *testing.T) string {
	t.Helper()
	return racktest.Build(t, "github.com/rackplane/rackplane/deploy/localcluster")
}

// startLauncher starts the launcher and returns once it printed its ready
// block; a launcher still running when the test ends is killed, and with
// it (parent-death signal) its children, and the zones it reported. Given
// an API port but no metrics port, nexus's metrics go to a free port, so
// that a cluster someone runs on this machine does not collide.
func startLauncher(t *testing.T, bin string, args ...string) *launcherRun {
	t.Helper()
	// A restart without ports takes the rack's.
	if slices.Contains(args, "--api-port") && !slices.Contains(args, "--metrics-port") {
		args = append(args, "--metrics-port", strconv.Itoa(freePort(t)))
	}
	lc := &launcherRun{cmd: exec.Command(bin, args...), exited: make(chan struct{}), ready: make(chan struct{}),
		pids: map[string]int{}, sledAddrs: map[string]string{}, stderrPath: filepath.Join(t.TempDir(), "stderr")}
	stderr, err := os.Create(lc.stderrPath)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	// lc is the launcher's stdout: exec copies into it until the launcher
	// exits, and Write never blocks, so Wait cannot hang on an unread pipe.
	lc.cmd.Stdout, lc.cmd.Stderr = lc, stderr
	lc.cmd.SysProcAttr = childSysProcAttr()
	if err := lc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		lc.cmd.Wait() //nolint:errcheck // the exit code is what the tests look at
		lc.exitCode = lc.cmd.ProcessState.ExitCode()
		close(lc.exited)
	}()
	t.Cleanup(func() {
		lc.cmd.Process.Kill() //nolint:errcheck // it may have exited
		<-lc.exited
		// Its children die with it, but the zones outlive their sled-agents
		// by design: kill what is left of them.
		lc.mu.Lock()
		for _, pid := range lc.pids {
			syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck // gone already is fine
		}
		lc.mu.Unlock()
		if t.Failed() {
			t.Logf("launcher stdout:\n%s", lc.output())
		}
	})
	select {
	case <-lc.ready:
		return lc
	case <-lc.exited:
		t.Fatalf("launcher exited %d before it was ready; stderr:\n%s", lc.exitCode, lc.stderr())
	case <-time.After(readyTimeout):
		t.Fatalf("launcher not ready within %s; stderr:\n%s", readyTimeout, lc.stderr())
	}
	return nil
}

// Write takes the launcher's stdout, line by line.
func (lc *launcherRun) Write(p []byte) (int, error) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.stdout = append(lc.stdout, p...)
	lc.partial = append(lc.partial, p...)
	for {
		line, rest, ok := bytes.Cut(lc.partial, []byte("\n"))
		if !ok {
			return len(p), nil
		}
		lc.parse(string(line))
		lc.partial = rest
	}
}

// parse records a "started <name> pid <pid>, …" or "zone <name> pid
// <pid>, …" line, the "ready: url=… token=…" line and the sleds' addresses
// printed after it, and closes ready at the end of that block.
func (lc *launcherRun) parse(line string) {
	var verb, name string
	var pid int
	if _, err := fmt.Sscanf(line, "%s %s pid %d,", &verb, &name, &pid); err == nil && (verb == "started" || verb == "zone") {
		lc.pids[name] = pid
		return
	}
	// "  sled-agent-1  sled <id>, gRPC at <addr> (…"
	if before, after, ok := strings.Cut(line, ", gRPC at "); ok {
		if fields := strings.Fields(before); len(fields) > 0 {
			lc.sledAddrs[fields[0]] = strings.Fields(after)[0]
		}
	}
	if line == "Ctrl-C stops the cluster." {
		close(lc.ready) // the end of what the launcher prints when ready
		return
	}
	rest, ok := strings.CutPrefix(line, "ready: ")
	if !ok {
		return
	}
	for _, field := range strings.Fields(rest) {
		if v, ok := strings.CutPrefix(field, "url="); ok {
			lc.url = v
		}
		if v, ok := strings.CutPrefix(field, "token="); ok {
			lc.token = v
		}
		if v, ok := strings.CutPrefix(field, "metrics="); ok {
			lc.metrics = v
		}
	}
}

func (lc *launcherRun) output() string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return string(lc.stdout)
}

// do calls the REST API with the printed URL and token.
func (lc *launcherRun) do(t *testing.T, method, path, body string, wantStatus int) string {
	t.Helper()
	return string(racktest.NewClient(lc.url, lc.token).MustCall(t, method, path, body, wantStatus).Body)
}

// get fetches a URL the launcher printed, without a token.
func (lc *launcherRun) get(t *testing.T, url string) string {
	t.Helper()
	return string(racktest.NewClient("", "").MustCall(t, http.MethodGet, url, "", http.StatusOK).Body)
}

func (lc *launcherRun) sledIDs(t *testing.T) []string {
	t.Helper()
	var page struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(lc.do(t, "GET", "/v1/system/hardware/sleds", "", http.StatusOK)), &page); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range page.Items {
		ids = append(ids, s.ID)
	}
	return ids
}

// stop sends SIGINT and requires a clean exit with no child left.
func (lc *launcherRun) stop(t *testing.T) {
	t.Helper()
	lc.cmd.Process.Signal(syscall.SIGINT) //nolint:errcheck // checked by the exit below
	if code := lc.wait(t); code != 0 {
		t.Fatalf("launcher exited %d after SIGINT, want 0; stderr:\n%s", code, lc.stderr())
	}
	lc.assertChildrenGone(t)
}

// wait returns the launcher's exit code, failing if it runs past exitTimeout.
func (lc *launcherRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-lc.exited:
		return lc.exitCode
	case <-time.After(exitTimeout):
		t.Fatalf("launcher still running %s after it was told to stop", exitTimeout)
		return -1
	}
}

// assertChildrenGone checks, right after the launcher exited, that none of
// the processes it started exists any more, not even as a zombie: the
// launcher must have reaped them all, not left them to be killed or
// adopted after it.
func (lc *launcherRun) assertChildrenGone(t *testing.T) {
	t.Helper()
	for name, pid := range lc.pids {
		err := syscall.Kill(pid, 0)
		if !errors.Is(err, syscall.ESRCH) {
			state, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			t.Errorf("%s (pid %d) still exists after the launcher exited (kill 0: %v; %s)", name, pid, err, state)
		}
	}
}

func (lc *launcherRun) stderr() string {
	data, _ := os.ReadFile(lc.stderrPath)
	return string(data)
}

// parentOf reads a process's parent pid from /proc.
func parentOf(t *testing.T, pid int) int {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: the fields after
	// its closing parenthesis are state, then the parent's pid.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatal(err)
	}
	return ppid
}

func freePort(t *testing.T) int {
	t.Helper()
	_, port, _ := strings.Cut(racktest.FreeAddrs(t, 1)[0], ":")
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
