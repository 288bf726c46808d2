package sledagent_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/ledger"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

// agentProcess is a sled-agent running as its own process.
type agentProcess struct {
	*racktest.Process
	addr string
	sled string
}

// startProcess starts the sled-agent binary over cfg and waits until it
// listens.
func startProcess(t *testing.T, cfg config.Config) *agentProcess {
	t.Helper()
	p := racktest.StartProcess(t, "sled-agent", racktest.Build(t, racktest.SledAgentBinary), cfg.Args()...)
	line := p.WaitLog("sled-agent listening", 30*time.Second, nil)
	return &agentProcess{Process: p, addr: fmt.Sprint(line["address"]), sled: cfg.SledID}
}

func (p *agentProcess) client(t *testing.T) (sledagentv1.SledAgentClient, func()) {
	conn := sledagenttest.DialAgent(t, p.addr, p.sled)
	return sledagentv1.NewSledAgentClient(conn), func() { conn.Close() }
}

// crashZones is the zones config of a generation: deterministic, so the
// content of a generation never changes, and varied, so the reconciler is
// busy starting and stopping zones when the kill lands.
func crashZones(cfg config.Config, generation uint64) *sledagentv1.OmicronZonesConfig {
	out := &sledagentv1.OmicronZonesConfig{Generation: generation}
	for k := generation % 6; k < generation%6+3; k++ {
		out.Zones = append(out.Zones, &sledagentv1.OmicronZoneConfig{
			Id:             uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprintf("crash-zone-%d", k))).String(),
			Kind:           sledagentv1.ZoneKind_ZONE_KIND_CRUCIBLE,
			FilesystemPool: cfg.Zpools[k%2],
			Address:        fmt.Sprintf("[fd00:1122:3344:101::%x]:32345", 0x100+k),
		})
	}
	return out
}

// TestZ3_AcknowledgedConfigSurvivesKill9 kills a real sled-agent process
// with SIGKILL at random moments while configs stream in, restarts it each
// time, and checks that the ledger always loads and is never behind the last
// acknowledged generation.
func TestZ3_AcknowledgedConfigSurvivesKill9(t *testing.T) {
	const kills = 60
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("CRASH_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (set CRASH_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	cfg := sledagenttest.Config(t)
	var lastAcked atomic.Uint64
	totalAcked := 0

	for i := 0; i < kills; i++ {
		p := startProcess(t, cfg)
		client, closeConn := p.client(t)
		inv, err := client.GetInventory(ctx, &sledagentv1.GetInventoryRequest{})
		if err != nil {
			t.Fatalf("restart %d: GetInventory: %v\n%s", i, err, p.Log())
		}
		ledgered := inv.GetLedgeredConfig().GetGeneration()
		if ledgered < lastAcked.Load() {
			t.Fatalf("restart %d: ledgered generation %d is below the acknowledged %d", i, ledgered, lastAcked.Load())
		}

		streamDone := make(chan int)
		go func() {
			acked := 0
			for g := max(ledgered, lastAcked.Load()) + 1; ; g++ {
				callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := client.EnsureZones(callCtx, &sledagentv1.EnsureZonesRequest{Config: crashZones(cfg, g)})
				cancel()
				if err != nil {
					streamDone <- acked
					return
				}
				lastAcked.Store(g)
				acked++
			}
		}()
		// The kill moment is the point of the test, drawn at random.
		<-time.After(time.Duration(rng.Int64N(int64(25 * time.Millisecond))))
		p.Kill()
		totalAcked += <-streamDone
		closeConn()
	}

	// After the last kill: the ledger loads, is not behind, and the sled
	// converges on it with the runtime holding exactly its zones.
	p := startProcess(t, cfg)
	client, closeConn := p.client(t)
	defer closeConn()
	var inv *sledagentv1.GetInventoryResponse
	testutil.WaitFor(t, 10*time.Second, func() error {
		var err error
		if inv, err = client.GetInventory(ctx, &sledagentv1.GetInventoryRequest{}); err != nil {
			return err
		}
		if inv.GetLastReconciliation().GetGeneration() != inv.GetLedgeredConfig().GetGeneration() {
			return fmt.Errorf("final agent has not reconciled its ledger: %v", inv)
		}
		return sledagenttest.AllOK(inv)
	})
	if g := inv.GetLedgeredConfig().GetGeneration(); g < lastAcked.Load() {
		t.Fatalf("final ledgered generation %d below acknowledged %d", g, lastAcked.Load())
	}
	want := map[string]bool{}
	for _, z := range inv.GetLedgeredConfig().GetZones() {
		want[z.GetId()] = true
	}
	zones := runtimeZonesIn(t, cfg.ZoneStateDir)
	if len(zones) != len(want) {
		t.Fatalf("runtime holds %d zones, the ledger wants %d", len(zones), len(want))
	}
	for id, z := range zones {
		if !want[id.String()] || !z.Running {
			t.Fatalf("runtime zone %s (running %v) does not match the ledger", id, z.Running)
		}
	}
	p.Stop()
	t.Logf("%d kills, %d configs acknowledged, final generation %d", kills, totalAcked, lastAcked.Load())
	if totalAcked == 0 {
		t.Fatal("no config was acknowledged between kills; the test proved nothing")
	}
}

func TestZ3_AgentProcessRefusesToStartWhenEveryLedgerCopyIsCorrupt(t *testing.T) {
	cfg := sledagenttest.Config(t)
	for _, dir := range cfg.LedgerDirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ledger.FileName), []byte("not a ledger"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := racktest.StartProcess(t, "sled-agent", racktest.Build(t, racktest.SledAgentBinary), cfg.Args()...)
	select {
	case <-p.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("sled-agent with a corrupt ledger did not exit within 30s")
	}
	var exit *exec.ExitError
	if err := p.Err(); !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("sled-agent with a corrupt ledger: %v, want a non-zero exit", err)
	}
	msg := p.Log()
	for _, want := range []string{"refusing to start", "none is valid", cfg.LedgerDirs[0], cfg.LedgerDirs[1]} {
		if !strings.Contains(msg, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, msg)
		}
	}
}

func TestSledAgentProcessStopsGracefullyOnSIGTERM(t *testing.T) {
	cfg := sledagenttest.Config(t)
	p := startProcess(t, cfg)
	conn := sledagenttest.DialAgent(t, p.addr, p.sled)
	for _, service := range []string{"", "omicron.sledagent.v1.SledAgent"} {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %q: %v, %v", service, resp, err)
		}
	}
	p.Stop()
	if !strings.Contains(p.Log(), "sled-agent stopped") {
		t.Fatalf("no orderly stop logged:\n%s", p.Log())
	}
}
