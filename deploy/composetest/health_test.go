package composetest

import (
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/rackplane/rackplane/services/nexus"
	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// longRunning are the services that run until stopped; the others are
// one-shots.
var longRunning = append([]string{"postgres"}, sledAgents...)

// N11: every long-running service says when it is healthy and how long
// Docker waits between its SIGTERM and its SIGKILL, which the service's
// own shutdown bounds fit in.
func TestN11_LongRunningServicesHaveAHealthcheckAndAnExplicitStopGracePeriod(t *testing.T) {
	p := loadProject(t)
	for _, name := range longRunning {
		svc := p.Services[name]
		if svc.HealthCheck == nil || len(svc.HealthCheck.Test) < 2 {
			t.Errorf("%s has no healthcheck", name)
		}
		if svc.StopGracePeriod == nil {
			t.Errorf("%s leaves stop_grace_period to Docker's default", name)
		}
	}
}

// A sled's whole stop fits in its grace period: the agent's graceful stop,
// then (as the container's init) its zones' stop, each zone's SIGKILL
// coming only after the nexus zone's own shutdown bound.
func TestEachSledsShutdownBoundsFitInItsStopGracePeriod(t *testing.T) {
	p := loadProject(t)
	for _, name := range sledAgents {
		cfg := sledAgentConfig(t, p, name)
		grace := time.Duration(*p.Services[name].StopGracePeriod)
		agent, zoneStop := time.Duration(cfg.ShutdownTimeout), time.Duration(cfg.ZoneStopTimeout)
		if agent+zoneStop >= grace {
			t.Errorf("%s: shutdown_timeout %s + zone_stop_timeout %s do not fit in stop_grace_period %s", name, agent, zoneStop, grace)
		}
		argv := strings.Fields(cfg.ZoneCommands[string(model.ZoneNexus)])
		if len(argv) == 0 {
			t.Fatalf("%s runs no nexus zones as processes", name)
		}
		if bound := nexusShutdownTimeout(t, argv[1:]); bound >= zoneStop {
			t.Errorf("%s: its nexus zones stop within %s, but are sent SIGKILL after zone_stop_timeout %s", name, bound, zoneStop)
		}
	}
}

// The sleds' healthcheck is the binaries' own `healthcheck` subcommands,
// which the real binaries accept, asking the agent at its listener as the
// sled, and its replica's /readyz at the port the plan gives its metrics,
// within the healthcheck's timeout; it may fail until rack setup is done.
func TestN11_EachSledsHealthcheckAsksItsAgentAndItsReplicasReadiness(t *testing.T) {
	p := loadProject(t)
	plan := rackPlan(t, p)
	bin := t.TempDir()
	for _, pkg := range []string{"./services/nexus/cmd/nexus", "./services/sledagent/cmd/sled-agent"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Dir = repoRoot
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, out)
		}
	}
	_, setupArgs := commandLine(t, p.Services["rack-setup"])
	setupBound, err := time.ParseDuration(flagValue(setupArgs, "--ready-timeout"))
	if err != nil {
		t.Fatalf("rack-setup --ready-timeout: %v", err)
	}
	for i, name := range sledAgents {
		cfg := sledAgentConfig(t, p, name)
		hc := p.Services[name].HealthCheck
		if hc == nil || len(hc.Test) != 2 || hc.Test[0] != "CMD-SHELL" {
			t.Fatalf("%s: healthcheck %v, want CMD-SHELL running both binaries' healthcheck", name, hc)
		}
		asked := map[string][]string{}
		var total time.Duration
		for _, command := range strings.Split(hc.Test[1], "&&") {
			argv := strings.Fields(command)
			if len(argv) < 2 || argv[1] != "healthcheck" {
				t.Fatalf("%s: healthcheck runs %q, want <binary> healthcheck", name, command)
			}
			if out, err := exec.Command(filepath.Join(bin, argv[0]), append(argv[1:], "--help")...).CombinedOutput(); err != nil {
				t.Errorf("%s: %s --help: %v\n%s", name, command, err, out)
			}
			timeout, err := time.ParseDuration(flagValue(argv, "--timeout"))
			if err != nil {
				t.Fatalf("%s: %s: --timeout: %v", name, command, err)
			}
			total += timeout
			asked[argv[0]] = argv
		}
		agent, replica := asked["sled-agent"], asked["nexus"]
		if agent == nil || replica == nil {
			t.Fatalf("%s: healthcheck %q does not ask both the sled-agent and its nexus replica", name, hc.Test[1])
		}
		_, listenPort := splitHostPort(t, cfg.ListenAddress)
		if _, port := splitHostPort(t, flagValue(agent, "--addr")); port != listenPort || flagValue(agent, "--tls-dir") != cfg.TLSDir {
			t.Errorf("%s: the agent is asked at %s with %s, want port %s with the sled's tls_dir %s",
				name, flagValue(agent, "--addr"), flagValue(agent, "--tls-dir"), listenPort, cfg.TLSDir)
		}
		var metricsPort string
		for _, z := range plan.Sleds[i].Zones {
			if z.Nexus != nil {
				_, metricsPort = splitHostPort(t, z.Nexus.MetricsAddress)
			}
		}
		probe, err := url.Parse(flagValue(replica, "--url"))
		if err != nil || probe.Path != "/readyz" || probe.Port() != metricsPort {
			t.Errorf("%s: the replica is asked at %q, want /readyz on its metrics port %s", name, flagValue(replica, "--url"), metricsPort)
		}
		if timeout, _ := time.ParseDuration(flagValue(replica, "--timeout")); timeout <= nexus.ReadinessTimeout {
			t.Errorf("%s: nexus healthcheck waits %s, no longer than readiness may take (%s)", name, timeout, nexus.ReadinessTimeout)
		}
		if hc.Timeout == nil || total >= time.Duration(*hc.Timeout) {
			t.Errorf("%s: the healthcheck's commands may take %s, its timeout is %v", name, total, hc.Timeout)
		}
		if hc.StartPeriod == nil || time.Duration(*hc.StartPeriod) < setupBound {
			t.Errorf("%s: start_period %v is shorter than rack setup may take (%s) to start its replica", name, hc.StartPeriod, setupBound)
		}
	}
}

// nexusShutdownTimeout is the shutdown bound nexus runs with, given args.
func nexusShutdownTimeout(t *testing.T, args []string) time.Duration {
	t.Helper()
	fs := pflag.NewFlagSet("nexus", pflag.ContinueOnError)
	nexusconfig.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("nexus zone command %v: %v", args, err)
	}
	bound := time.Duration(nexusconfig.Default().ShutdownTimeout)
	if f := fs.Lookup("shutdown-timeout"); f != nil && f.Changed {
		d, err := time.ParseDuration(f.Value.String())
		if err != nil {
			t.Fatalf("nexus zone command: --shutdown-timeout: %v", err)
		}
		bound = d
	}
	return bound
}

// flagValue is the value of --name=value in args, "" if absent.
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}
