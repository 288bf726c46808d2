package sledagenttest

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent"
	"github.com/rackplane/rackplane/services/sledagent/config"
)

// Agent is a sled-agent running inside the test.
type Agent struct {
	Remote
	Config config.Config
	Server *sledagent.Server
	log    *zap.Logger
	conn   *grpc.ClientConn
	served chan error
}

// Config returns a valid configuration over fresh temporary directories,
// with two zpools, quick reconciler retries, fault injection on and a
// certificate of the test's rack CA (rackpkitest.For) for its sled id.
func Config(t testutil.TB) config.Config {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.ListenAddress = "127.0.0.1:0"
	cfg.SledID = uuid.NewString()
	cfg.TLSDir = rackpkitest.For(t).Member(rackpki.Identity{Kind: rackpki.Sled, ID: cfg.SledID})
	cfg.FaultInjection = true
	cfg.LedgerDirs = []string{filepath.Join(dir, "m2-0"), filepath.Join(dir, "m2-1")}
	cfg.ZoneStateDir = filepath.Join(dir, "zones")
	cfg.Zpools = []string{"oxp_" + uuid.NewString(), "oxp_" + uuid.NewString()}
	cfg.ReconcilerRetryInitial = config.Duration(5 * time.Millisecond)
	cfg.ReconcilerRetryMax = config.Duration(50 * time.Millisecond)
	return cfg
}

// Start runs an agent with Config(t), adjusted by the options, and stops it
// when the test ends. Its warnings and errors go to the test's log.
func Start(t testutil.TB, opts ...func(*config.Config)) *Agent {
	t.Helper()
	return StartLogged(t, TestLogger(t), opts...)
}

// StartLogged is Start with log as the agent's logger.
func StartLogged(t testutil.TB, log *zap.Logger, opts ...func(*config.Config)) *Agent {
	t.Helper()
	cfg := Config(t)
	for _, o := range opts {
		o(&cfg)
	}
	a := &Agent{Remote: Remote{t: t}, Config: cfg, log: log}
	a.start()
	t.Cleanup(a.Stop)
	return a
}

// TestLogger sends warnings and errors to the test's log when t is a test,
// and discards them otherwise.
func TestLogger(t testutil.TB) *zap.Logger {
	if tt, ok := t.(zaptest.TestingT); ok {
		return zaptest.NewLogger(tt, zaptest.Level(zap.WarnLevel))
	}
	return zap.NewNop()
}

func (a *Agent) start() {
	a.t.Helper()
	srv, err := sledagent.New(a.Config, a.log)
	if err != nil {
		a.t.Fatalf("starting sled-agent: %v", err)
	}
	a.Server = srv
	a.served = make(chan error, 1)
	go func() { a.served <- srv.Serve() }()
	conn := DialAgent(a.t, srv.Addr(), a.Config.SledID)
	a.conn = conn
	a.Remote = NewRemote(a.t, conn)
}

// Stop shuts the agent down; zones stay in the runtime's state directory.
func (a *Agent) Stop() {
	if a.Server == nil {
		return
	}
	a.conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.Server.Shutdown(ctx)
	if err := <-a.served; err != nil {
		a.t.Errorf("serve: %v", err)
	}
	a.Server = nil
}

// Restart stops the agent and starts a new one over the same directories.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	a.start()
}

// Zone returns a zone config of kind on the agent's first zpool, with a
// fresh id and the given port on a unique-local address.
func (a *Agent) Zone(kind sledagentv1.ZoneKind, port int) *sledagentv1.OmicronZoneConfig {
	z := &sledagentv1.OmicronZoneConfig{
		Id:             uuid.NewString(),
		Kind:           kind,
		FilesystemPool: a.Config.Zpools[0],
		Address:        fmt.Sprintf("[fd00:1122:3344:101::%x]:%d", port, 12000+port%50000),
	}
	if kind == sledagentv1.ZoneKind_ZONE_KIND_NEXUS {
		z.Nexus = &sledagentv1.NexusZoneDetails{
			ExternalAddress: fmt.Sprintf("[fd00:1122:3344:101::%x]:12220", port),
			MetricsAddress:  fmt.Sprintf("[fd00:1122:3344:101::%x]:12223", port),
			DatabaseBackend: "sqlite", DatabaseUrl: "/var/lib/nexus/nexus.db"}
	}
	return z
}

// Ensure sends a zones config and fails the test if it is refused.
func (a Remote) Ensure(generation uint64, zones ...*sledagentv1.OmicronZoneConfig) {
	a.t.Helper()
	_, err := a.Client.EnsureZones(context.Background(), &sledagentv1.EnsureZonesRequest{
		Config: &sledagentv1.OmicronZonesConfig{Generation: generation, Zones: zones},
	})
	if err != nil {
		a.t.Fatalf("EnsureZones(generation %d): %v", generation, err)
	}
}

// Inventory fetches the agent's inventory.
func (a Remote) Inventory() *sledagentv1.GetInventoryResponse {
	a.t.Helper()
	inv, err := a.Client.GetInventory(context.Background(), &sledagentv1.GetInventoryRequest{})
	if err != nil {
		a.t.Fatalf("GetInventory: %v", err)
	}
	return inv
}

// WaitReconciled polls the inventory until a completed pass has reconciled
// generation (or a later one) and cond, if given, holds for it.
func (a Remote) WaitReconciled(generation uint64, cond func(*sledagentv1.GetInventoryResponse) error) *sledagentv1.GetInventoryResponse {
	a.t.Helper()
	var inv *sledagentv1.GetInventoryResponse
	testutil.WaitFor(a.t, 10*time.Second, func() error {
		inv = a.Inventory()
		last := inv.GetLastReconciliation()
		if last == nil || last.GetGeneration() < generation {
			return fmt.Errorf("last reconciled generation %d, waiting for %d", last.GetGeneration(), generation)
		}
		if cond != nil {
			return cond(inv)
		}
		return nil
	})
	return inv
}

// AllOK is a WaitReconciled condition: every zone reported is running.
func AllOK(inv *sledagentv1.GetInventoryResponse) error {
	for _, z := range inv.GetLastReconciliation().GetZones() {
		if z.GetError() != nil {
			return fmt.Errorf("zone %s: %s", z.GetZoneId(), z.GetError().GetMessage())
		}
	}
	return nil
}

// Register registers a VMM for a new instance with a small valid spec and
// returns the VMM id.
func (a Remote) Register() string {
	a.t.Helper()
	id := uuid.NewString()
	if _, err := a.Client.EnsureRegistered(context.Background(), &sledagentv1.EnsureRegisteredRequest{
		VmmId:      id,
		InstanceId: uuid.NewString(),
		Spec:       &sledagentv1.VmmSpec{Ncpus: 2, MemoryBytes: 4 << 30, Hostname: "guest"},
	}); err != nil {
		a.t.Fatalf("EnsureRegistered: %v", err)
	}
	return id
}

// EnsureState asks a VMM for a target state and fails the test on error.
func (a Remote) EnsureState(vmmID string, target sledagentv1.VmmTargetState) *sledagentv1.VmmRuntime {
	a.t.Helper()
	resp, err := a.Client.EnsureState(context.Background(), &sledagentv1.EnsureStateRequest{VmmId: vmmID, Target: target})
	if err != nil {
		a.t.Fatalf("EnsureState(%s, %s): %v", vmmID, target, err)
	}
	return resp.GetRuntime()
}

// Step completes the next pending transition of vmmID ("" for every VMM) in
// explicit mode, or all of them with drain, and returns how many completed.
func (a Remote) Step(vmmID string, drain bool) int {
	a.t.Helper()
	resp, err := a.Sim.StepVmms(context.Background(), &sledagentv1.StepVmmsRequest{VmmId: vmmID, Drain: drain})
	if err != nil {
		a.t.Fatalf("StepVmms: %v", err)
	}
	return int(resp.GetTransitions())
}

// RPCFaults fetches the agent's RPC faults and the calls its black hole
// holds.
func (a Remote) RPCFaults() *sledagentv1.GetRpcFaultsResponse {
	a.t.Helper()
	resp, err := a.Sim.GetRpcFaults(context.Background(), &sledagentv1.GetRpcFaultsRequest{})
	if err != nil {
		a.t.Fatalf("GetRpcFaults: %v", err)
	}
	return resp
}

// WaitHeld polls until the agent's black hole holds a call of method (its
// full gRPC name, e.g. sledagentv1.SledAgent_EnsureUnregistered_FullMethodName)
// for vmmID ("" for any), so a test knows the call has reached the sled and
// waits there before staging what happens next.
func (a Remote) WaitHeld(method string, vmmID string) {
	a.t.Helper()
	testutil.WaitFor(a.t, 10*time.Second, func() error {
		held := a.RPCFaults().GetHeldCalls()
		for _, c := range held {
			if c.GetMethod() == method && (vmmID == "" || c.GetVmmId() == vmmID) {
				return nil
			}
		}
		return fmt.Errorf("no %s call for VMM %q held; held: %v", method, vmmID, held)
	})
}
