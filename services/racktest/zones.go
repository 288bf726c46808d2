package racktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/racksetup"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/process"
)

// zoneRackBound bounds rack setup: sled-agents taking their configs and
// the nexus zones coming up.
const zoneRackBound = time.Minute

// nexusZones is how a rack with the process zone runtime runs its
// replicas: as nexus zones of its sleds, set up by rack setup (Z11), the
// way the local cluster and docker-compose run them.
type nexusZones struct {
	t       testutil.TB
	bin     string
	args    map[int][]string // by replica
	members []*ZoneNexus
}

// planNexusZones chooses each replica's addresses and sled (replica i on
// sled i mod sleds) before any sled starts, since the sleds must know
// where the replicas will listen.
func planNexusZones(t testutil.TB, o Options) *nexusZones {
	t.Helper()
	if o.Sleds == 0 {
		t.Fatalf("racktest: nexus replicas run as zones of sleds; give Options.Sleds")
	}
	z := &nexusZones{t: t, bin: Build(t, NexusBinary), args: o.NexusZoneArgs}
	for i := range o.Nexuses {
		a := FreeAddrs(t, 3)
		z.members = append(z.members, &ZoneNexus{t: t, name: fmt.Sprintf("nexus-%d", i), id: uuid.New(), sled: i % o.Sleds,
			addrs: nexusAddrs{internal: a[0], external: a[1], metrics: a[2]}})
	}
	return z
}

// internalAddrs are where sled-agents reach the replicas.
func (z *nexusZones) internalAddrs() []string {
	out := make([]string, len(z.members))
	for i, n := range z.members {
		out[i] = n.addrs.internal
	}
	return out
}

// sledConfig makes sled i run nexus zones as processes, and stops its zone
// processes once the test is done with it.
func (z *nexusZones) sledConfig(i int, c *sledconfig.Config) {
	c.NexusAddress = z.internalAddrs()
	command := []string{z.bin}
	for r, n := range z.members {
		if n.sled == i {
			command = append(command, z.args[r]...)
		}
	}
	c.ZoneCommands = map[string]string{"nexus": strings.Join(command, " ")}
	c.ZoneRoot = filepath.Join(filepath.Dir(c.ZoneStateDir), "pools")
	root := c.ZoneRoot
	// Registered before the sled starts, so it runs after the sled has
	// stopped: a running agent would restart what it kills.
	z.t.Cleanup(func() { process.StopAll(root, 10*time.Second) }) //nolint:errcheck // best effort
	for _, n := range z.members {
		if n.sled == i {
			// Its identity, where the sled-agent hands it to the zone, as
			// `nexus rack-certs` puts it.
			rackpkitest.For(z.t).WriteMember(rackpki.ZoneDir(c.TLSDir, n.id.String()),
				rackpki.Identity{Kind: rackpki.Nexus, ID: n.id.String()})
			n.pool = c.Zpools[0]
			n.zoneDir = filepath.Join(root, n.pool, "zones", n.id.String())
		}
	}
}

// setUp runs rack setup over the started sleds.
func (z *nexusZones) setUp(db Database, sleds []Sled, log *zap.Logger) {
	z.t.Helper()
	plan := racksetup.Plan{Database: racksetup.Database{Backend: string(db.Backend), URL: db.URL}}
	for i, s := range sleds {
		ps := racksetup.Sled{ID: s.ID().String(), Address: s.Addr()}
		for _, n := range z.members {
			if n.sled == i {
				ps.Zones = append(ps.Zones, racksetup.Zone{ID: n.id.String(), Kind: model.ZoneNexus, Pool: n.pool,
					Address: n.addrs.internal, Nexus: &racksetup.NexusListeners{ExternalAddress: n.addrs.external, MetricsAddress: n.addrs.metrics}})
			}
		}
		plan.Sleds = append(plan.Sleds, ps)
	}
	if _, err := racksetup.Run(context.Background(), plan, racksetup.Options{ReadyBound: zoneRackBound, Log: log,
		Trust: rackpkitest.For(z.t).Operator()}); err != nil {
		z.t.Fatalf("rack setup: %v", err)
	}
}

// ZoneNexus is a nexus replica running as a zone of a sled: its process is
// the sled-agent's, which restarts it when it dies.
type ZoneNexus struct {
	t       testutil.TB
	name    string
	id      uuid.UUID
	sled    int
	addrs   nexusAddrs
	pool    string
	zoneDir string
}

var _ Nexus = (*ZoneNexus)(nil)

func (n *ZoneNexus) Name() string         { return n.name }
func (n *ZoneNexus) ID() uuid.UUID        { return n.id }
func (n *ZoneNexus) InternalAddr() string { return n.addrs.internal }
func (n *ZoneNexus) ExternalURL() string  { return "http://" + n.addrs.external }
func (n *ZoneNexus) MetricsURL() string   { return "http://" + n.addrs.metrics }

// LogPath is the zone's log.
func (n *ZoneNexus) LogPath() string { return filepath.Join(n.zoneDir, "zone.log") }

// Pid is the zone's process, from the record its sled-agent keeps.
func (n *ZoneNexus) Pid() int {
	n.t.Helper()
	pid, err := n.pid()
	if err != nil {
		n.t.Fatalf("%s's zone record: %v", n.name, err)
	}
	return pid
}

func (n *ZoneNexus) pid() (int, error) {
	var rec struct {
		Pid int `json:"pid"`
	}
	data, err := os.ReadFile(filepath.Join(n.zoneDir, "zone.json"))
	if err == nil {
		err = json.Unmarshal(data, &rec)
	}
	return rec.Pid, err
}

// LogLines are the zone's log lines, across its runs, whose message
// contains msg.
func (n *ZoneNexus) LogLines(msg string) []map[string]any {
	data, _ := os.ReadFile(n.LogPath()) // not there yet: nothing logged
	var out []map[string]any
	for _, line := range strings.Split(string(data), "\n") {
		var fields map[string]any
		if json.Unmarshal([]byte(line), &fields) == nil && strings.Contains(fmt.Sprint(fields["msg"]), msg) {
			out = append(out, fields)
		}
	}
	return out
}

// Running says whether the zone's process, as its record names it, is
// alive.
func (n *ZoneNexus) Running() bool {
	n.t.Helper()
	pid, err := n.pid()
	if errors.Is(err, os.ErrNotExist) {
		return false // the zone is gone, its record with it
	}
	if err != nil {
		n.t.Fatalf("%s's zone record: %v", n.name, err)
	}
	return pid > 0 && syscall.Kill(pid, 0) == nil && !zombie(pid)
}

// Kill is kill -9 of the zone's process; its sled-agent starts it again
// after a backoff.
func (n *ZoneNexus) Kill() { n.signal(syscall.SIGKILL) }

// Stop sends the zone's process SIGTERM and waits until it is gone; its
// sled-agent starts it again after a backoff.
func (n *ZoneNexus) Stop() { n.signal(syscall.SIGTERM) }

func (n *ZoneNexus) signal(sig syscall.Signal) {
	n.t.Helper()
	pid := n.Pid()
	if err := syscall.Kill(pid, sig); err != nil {
		n.t.Fatalf("signalling %s (pid %d): %v", n.name, pid, err)
	}
	testutil.WaitFor(n.t, processStopBound, func() error {
		if syscall.Kill(pid, 0) == nil && !zombie(pid) {
			return fmt.Errorf("%s (pid %d) still runs", n.name, pid)
		}
		return nil
	})
}

// Restart kills the zone's process and waits until its sled-agent has
// started a new one that serves.
func (n *ZoneNexus) Restart() {
	n.t.Helper()
	old := n.Pid()
	n.Kill()
	testutil.WaitFor(n.t, zoneRackBound, func() error {
		if pid := n.Pid(); pid == old {
			return fmt.Errorf("%s has not been restarted yet", n.name)
		}
		return Serving(n.t, n.addrs.internal, "")
	})
}

// Pause freezes the zone's process (SIGSTOP); Resume lets it go on.
func (n *ZoneNexus) Pause() {
	n.t.Helper()
	pid := n.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		n.t.Fatal(err)
	}
	waitThreads(n.t, n.name, pid, true)
}

func (n *ZoneNexus) Resume() {
	n.t.Helper()
	pid := n.Pid()
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		n.t.Fatal(err)
	}
	waitThreads(n.t, n.name, pid, false)
}

// Serving says whether a nexus's internal API reports service (the
// server as a whole when "") SERVING; nil when it does. It asks as the
// test's operator.
func Serving(t testutil.TB, addr, service string) error {
	conn, err := grpcconn.Dial(addr, rackpkitest.For(t).Operator(), rackpki.Identity{Kind: rackpki.Nexus}, 0)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		err = fmt.Errorf("health %s", resp.GetStatus())
	}
	return err
}

// zombie reports whether pid has exited and awaits its parent.
func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' {
			return i+2 < len(stat) && stat[i+2] == 'Z'
		}
	}
	return false
}
