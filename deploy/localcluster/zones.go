package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rackplane/rackplane/services/nexus/racksetup"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/process"
)

// writePlan writes the rack's plan next to the state, as
// rack-plan.json.new until rack setup takes it: a plan it refused does not
// replace the rack's.
func (l layout) writePlan(sleds []sledAddr) (string, error) {
	addrs := make([]string, len(sleds))
	for i, s := range sleds {
		addrs[i] = s.addr
	}
	plan, err := json.MarshalIndent(l.plan(addrs), "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(l.dir, "rack-plan.json.new")
	return path, os.WriteFile(path, append(plan, '\n'), 0o600)
}

// issueCertificates runs `nexus rack-certs` on the plan, as an operator
// would before the sled-agents start: the rack CA (once; a restart keeps
// it and every identity it issued), each sled's and nexus zone's
// certificate, and the operator's, for sledctl.
func (l layout) issueCertificates(ctx context.Context, planPath string) error {
	cmd := exec.CommandContext(ctx, l.bin("nexus"), "rack-certs", "--plan", planPath, "--dir", l.pki().Dir)
	cmd.SysProcAttr = childSysProcAttr()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nexus rack-certs: %w\n%s", err, out)
	}
	return nil
}

// setUpRack runs `nexus rack-setup` on the plan, as an operator would:
// the plan is recorded (once: a restart finds it recorded and only pushes
// the zones again), the sled-agents get their zones, and it returns once
// every replica answers.
func (l layout) setUpRack(ctx context.Context, planPath string, bound time.Duration) error {
	defer os.Remove(planPath) //nolint:errcheck // gone once renamed
	logPath := filepath.Join(l.logDir(), "rack-setup.log")
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.CommandContext(ctx, l.bin("nexus"), "rack-setup", "--plan", planPath, "--ready-timeout", bound.String(),
		"--tls-dir", l.pki().OperatorDir())
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = childSysProcAttr()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("rack setup from %s: %w; last lines of %s:\n%s", planPath, err, logPath, tail(logPath, 20))
	}
	return os.Rename(planPath, filepath.Join(l.dir, "rack-plan.json"))
}

// keepRecordedPorts makes a restart use the ports the rack was set up with:
// a rack is set up once, so its replicas listen where its plan says. Ports
// given on the command line must be those; other ones need --fresh.
func (l *layout) keepRecordedPorts(opts options) error {
	data, err := os.ReadFile(filepath.Join(l.dir, "rack-plan.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil // a new cluster
	}
	if err != nil {
		return err
	}
	var plan racksetup.Plan
	if err := json.Unmarshal(data, &plan); err != nil || len(plan.Sleds) == 0 || len(plan.Sleds[0].Zones) == 0 ||
		plan.Sleds[0].Zones[0].Nexus == nil {
		return fmt.Errorf("%s/rack-plan.json is not this launcher's plan (%v); start with --fresh", l.dir, err)
	}
	nexus := plan.Sleds[0].Zones[0].Nexus
	api, errAPI := netip.ParseAddrPort(nexus.ExternalAddress)
	metrics, errMetrics := netip.ParseAddrPort(nexus.MetricsAddress)
	if errAPI != nil || errMetrics != nil {
		return fmt.Errorf("%s/rack-plan.json: %v", l.dir, errors.Join(errAPI, errMetrics))
	}
	if (opts.apiPortGiven && int(api.Port()) != l.apiPort) || (opts.metricsPortGiven && int(metrics.Port()) != l.metrics) {
		return fmt.Errorf("the cluster in %s was set up with its API on port %d and its metrics on %d; "+
			"start it with those, or with --fresh", l.dir, api.Port(), metrics.Port())
	}
	l.apiPort, l.metrics = int(api.Port()), int(metrics.Port())
	return nil
}

// zoneProcess is a zone a sled-agent runs as a process, as the launcher
// reports it.
type zoneProcess struct {
	name, sled, log string
	pid             int
}

// reportZones prints the zone processes the sled-agents run, in the form
// of the launcher's own children, and returns them.
func (l layout) reportZones(stdout io.Writer) ([]zoneProcess, error) {
	var zones []zoneProcess
	for i := range l.sleds {
		running, err := process.Running(l.zoneRoot(i))
		if err != nil {
			return nil, err
		}
		for _, p := range running {
			z := zoneProcess{name: l.zoneName(p), sled: sledName(i), log: p.Log, pid: p.Pid}
			fmt.Fprintf(stdout, "zone %s pid %d, run by %s, log %s\n", z.name, z.pid, z.sled, z.log)
			zones = append(zones, z)
		}
	}
	return zones, nil
}

// zoneName is "nexus-<k>" for replica k's zone, named as the launcher
// numbers replicas.
func (l layout) zoneName(p process.Process) string {
	for k := range l.replicas {
		if p.Zone.ID == l.nexusID(k) {
			return fmt.Sprintf("nexus-%d", k+1)
		}
	}
	return strings.ToLower(string(p.Zone.Kind)) + "-" + p.Zone.ID.String()[:8]
}

// stopZones stops the zone processes the sled-agents left running (by
// design a zone outlives its agent), of every sled the state directory
// holds, and reaps those that fell to the launcher, so that nothing of the
// cluster outlives it.
func (l layout) stopZones(bound time.Duration, stdout io.Writer) {
	roots, _ := filepath.Glob(filepath.Join(l.dir, "sled-*", "pools"))
	for _, root := range roots {
		pids, err := process.StopAll(root, bound)
		if err != nil {
			fmt.Fprintf(stdout, "stopping the zones under %s: %v\n", root, err)
		}
		for _, pid := range pids {
			reap(pid)
		}
	}
}
