package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

const (
	rackctlBinary = "github.com/rackplane/rackplane/services/nexus/cmd/rackctl"
	sledctlBinary = "github.com/rackplane/rackplane/services/sledagent/cmd/sledctl"
	// commandBound bounds one command run by a test.
	commandBound = 3 * time.Minute
)

// cli runs the built rackctl as a person would, in an environment of the
// test's own: a home and config directory of its own, no RACKPLANE_ or
// OXIDE_ variables but those the test gives.
type cli struct {
	t   *testing.T
	bin string
	env []string
}

// result is how a command ended.
type result struct {
	stdout, stderr string
	code           int
}

// newCLI is rackctl with the environment given (e.g. RACKPLANE_URL=…).
func newCLI(t *testing.T, env ...string) cli {
	t.Helper()
	home := t.TempDir()
	base := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, "config")}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name != "HOME" && name != "XDG_CONFIG_HOME" && !strings.HasPrefix(name, "RACKPLANE_") && !strings.HasPrefix(name, "OXIDE_") {
			base = append(base, kv)
		}
	}
	return cli{t: t, bin: racktest.Build(t, rackctlBinary), env: append(base, env...)}
}

// asAdmin is rackctl pointed at the rack's first replica with a new
// fleet admin's token, through the environment.
func asAdmin(t *testing.T, r racktest.Rack) cli {
	t.Helper()
	return newCLI(t, "RACKPLANE_URL="+r.Nexus(0).ExternalURL(), "RACKPLANE_TOKEN="+r.Token(racktest.FleetAdmin))
}

// with is the same rackctl with more environment.
func (c cli) with(env ...string) cli {
	c.env = append(append([]string{}, c.env...), env...)
	return c
}

func (c cli) run(args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = c.env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		c.t.Fatalf("running rackctl %s: %v", strings.Join(args, " "), err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// must runs a command that has to succeed.
func (c cli) must(args ...string) result {
	c.t.Helper()
	res := c.run(args...)
	if res.code != 0 {
		c.t.Fatalf("rackctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
	}
	return res
}

// fails runs a command that has to fail with exit code 1, and returns
// its error line.
func (c cli) fails(args ...string) string {
	c.t.Helper()
	res := c.run(args...)
	if res.code != 1 || !strings.HasPrefix(res.stderr, "rackctl: ") {
		c.t.Fatalf("rackctl %s: exit %d, stderr %q; want exit 1 and an error", strings.Join(args, " "), res.code, res.stderr)
	}
	return strings.TrimSpace(res.stderr)
}

// json runs a command with -o json and decodes what it printed.
func (c cli) json(v any, args ...string) {
	c.t.Helper()
	res := c.must(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(res.stdout), v); err != nil {
		c.t.Fatalf("rackctl %s -o json printed what is not JSON: %v\n%s", strings.Join(args, " "), err, res.stdout)
	}
}

// instance is rackctl's JSON of an instance, as far as tests read it.
type instance struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	RunState string `json:"run_state"`
}

func (c cli) instance(ref string) instance {
	c.t.Helper()
	var inst instance
	c.json(&inst, "instance", "view", ref)
	return inst
}

// table splits a table's output into rows of cells.
func table(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

// wantHeader fails unless the table's first row is header.
func wantHeader(t *testing.T, out string, header ...string) [][]string {
	t.Helper()
	rows := table(out)
	if strings.Join(rows[0], " ") != strings.Join(header, " ") {
		t.Fatalf("table header %v, want %v:\n%s", rows[0], header, out)
	}
	return rows[1:]
}

// wantLines fails unless out holds each line, in order.
func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	rest := out
	for _, l := range lines {
		i := strings.Index(rest, l)
		if i < 0 {
			t.Fatalf("output lacks %q (after what came before):\n%s", l, out)
		}
		rest = rest[i+len(l):]
	}
}

// F1 and seed 001 end to end, as an operator types it: an instance whose
// VMM hangs while stopping stays stopping; force-terminate settles it
// stopped, and it starts again.
func TestF1_AnOperatorForceTerminatesAWedgedInstanceFromTheCLI(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1})
			rackctl := asAdmin(t, r)
			rackctl.must("project", "create", "demo")
			created := rackctl.must("instance", "create", "demo/web", "--ncpus", "1", "--memory", "1GiB", "--start", "--wait")
			wantLines(t, created.stderr, "demo/web: ", "running (")
			if rows := wantHeader(t, created.stdout, instanceColumns.header...); len(rows) != 1 || rows[0][0] != "web" || rows[0][2] != "running" {
				t.Fatalf("create --start --wait printed %q, want web running", created.stdout)
			}
			web := rackctl.instance("demo/web")

			wedge(t, r, web.ID)
			stopping := rackctl.must("instance", "stop", "demo/web")
			if rows := table(stopping.stdout); rows[1][2] != "stopping" {
				t.Fatalf("stop printed %q, want the instance stopping", stopping.stdout)
			}
			// A wait that cannot end gives up at its --timeout, saying so.
			if msg := rackctl.fails("instance", "stop", "demo/web", "--wait", "--timeout", "300ms"); !strings.Contains(msg,
				"demo/web is still stopping after 300ms (--timeout); it was to be stopped or failed") {
				t.Fatalf("a wait past its timeout: %q", msg)
			}
			// Its VMM never finishes stopping: the instance shows stopping at
			// every look, for as long as the test looks.
			for looks, since := 0, time.Now(); looks < 3 || time.Since(since) < time.Second; looks++ {
				if got := rackctl.instance("demo/web"); got.RunState != "stopping" {
					t.Fatalf("look %d at a wedged instance: %s, want stopping", looks, got.RunState)
				}
			}

			ended := rackctl.must("instance", "force-terminate", "demo/web", "--wait")
			wantLines(t, ended.stderr, "demo/web: stopping → stopped (")
			if rows := table(ended.stdout); rows[1][2] != "stopped" {
				t.Fatalf("force-terminate printed %q, want stopped", ended.stdout)
			}
			again := rackctl.must("instance", "start", "demo/web", "--wait")
			wantLines(t, again.stderr, "demo/web: stopped → ", "running (")
			if got := rackctl.instance("demo/web"); got.RunState != "running" || got.ID != web.ID {
				t.Fatalf("after start --wait: %+v, want %s running", got, web.ID)
			}
		})
	}
}

// wedge makes the instance's VMM hang when told to stop, with sledctl, as
// the operator of the rack.
func wedge(t *testing.T, r racktest.Rack, instanceID string) {
	t.Helper()
	sled := r.Sled(0)
	cmd := exec.Command(racktest.Build(t, sledctlBinary), "--addr", sled.Addr(), "--tls-dir", rackpkitest.For(t).OperatorDir(),
		"fault", "vmm", "hang-stop", "--instance", instanceID)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sledctl fault vmm hang-stop: %v\n%s", err, out)
	}
}
