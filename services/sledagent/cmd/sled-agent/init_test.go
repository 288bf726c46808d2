package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
)

// Z10: in a container the sled-agent is its PID namespace's init, and the
// kernel SIGKILLs what is left of the namespace when it exits; so, asked
// to stop, it stops its zones itself, with the SIGTERM a zone's shutdown
// gives, and a nexus zone gets its graceful stop. The container is a new
// PID namespace made by unshare (root only, like Docker).
func TestZ10_AsItsContainersInitTheSledAgentStopsItsZonesGracefully(t *testing.T) {
	unshare := pidNamespaces(t)
	script := filepath.Join(t.TempDir(), "zone.sh")
	marker := filepath.Join(t.TempDir(), "zone-stopped")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntrap 'echo SIGTERM > \"$1\"; exit 0' TERM\nwhile :; do sleep 0.1; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := sledagenttest.Config(t)
	cfg.ZoneCommands = map[string]string{"oximeter": script + " " + marker}
	cfg.ZoneRoot = filepath.Join(filepath.Dir(cfg.ZoneStateDir), "pools")
	cfg.ZoneStopTimeout = config.Duration(10 * time.Second)
	p := racktest.StartProcess(t, "sled-agent", unshare,
		append([]string{"--pid", "--fork", "--mount-proc", "--kill-child", racktest.Build(t, racktest.SledAgentBinary)}, cfg.Args()...)...)
	line := p.WaitLog("sled-agent listening", 30*time.Second, nil)
	agent := sledagenttest.NewRemote(t, sledagenttest.DialAgent(t, fmt.Sprint(line["address"]), cfg.SledID))
	agent.Ensure(1, &sledagentv1.OmicronZoneConfig{Id: uuid.NewString(), Kind: sledagentv1.ZoneKind_ZONE_KIND_OXIMETER,
		FilesystemPool: cfg.Zpools[0], Address: "[fd00:1122:3344:101::1]:12223"})
	agent.WaitReconciled(1, sledagenttest.AllOK)

	if err := syscall.Kill(childOf(t, p.Pid()), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("the sled-agent did not stop within 30s of SIGTERM:\n%s", p.Log())
	}
	if err := p.Err(); err != nil {
		t.Fatalf("the sled-agent ended with %v:\n%s", err, p.Log())
	}
	if got, err := os.ReadFile(marker); err != nil || strings.TrimSpace(string(got)) != "SIGTERM" {
		t.Fatalf("the zone was not stopped with SIGTERM (%q, %v): it died with the namespace\n%s", got, err, p.Log())
	}
}

// pidNamespaces returns unshare's path once it can make a PID namespace
// here; a test that needs one is skipped elsewhere, and fails in CI.
func pidNamespaces(t *testing.T) string {
	t.Helper()
	unshare := testutil.RequireCommand(t, "unshare")
	if out, err := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "true").CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI must be able to make PID namespaces (root): unshare: %v: %s", err, out)
		}
		t.Skipf("cannot make a PID namespace here (needs root): %v: %s", err, out)
	}
	return unshare
}

// childOf is the only child of pid: the process unshare forked into the
// new namespace.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(data))
	if len(fields) != 1 {
		t.Fatalf("unshare (pid %d) has children %v; want one", pid, fields)
	}
	child, err := strconv.Atoi(fields[0])
	if err != nil {
		t.Fatal(err)
	}
	return child
}
