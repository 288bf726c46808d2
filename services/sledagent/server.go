// Package sledagent assembles a sled-agent: the zone runtime, the
// reconciler, the zones ledger, the hypervisor, the VMM manager and its
// publisher to nexus, the app layer and the gRPC API, in the order they
// depend on each other. cmd/sled-agent runs it as a process and
// sledagenttest runs it inside tests.
package sledagent

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/pkg/dirlock"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/logging"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/services/sledagent/api"
	"github.com/rackplane/rackplane/services/sledagent/app"
	"github.com/rackplane/rackplane/services/sledagent/config"
	hypervisorsim "github.com/rackplane/rackplane/services/sledagent/hypervisor/sim"
	"github.com/rackplane/rackplane/services/sledagent/ledger"
	"github.com/rackplane/rackplane/services/sledagent/nexusclient"
	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/vmm"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/faults"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/process"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/sim"
)

const (
	// processZoneStartGrace is how long a process zone must run for its
	// start to count: a command that fails at once fails the start.
	processZoneStartGrace = 300 * time.Millisecond
	// processZonePollPeriod is how often adopted zone processes are
	// checked for an exit.
	processZonePollPeriod = time.Second
)

// callers is who may call a sled-agent (S4): nexus replicas and the
// operator drive it, the operator alone injects faults, and only other
// sleds take part in a simulated migration; any member may ask its health.
var callers = grpcconn.Policy{
	sledagentv1.SledAgent_ServiceDesc.ServiceName:    {rackpki.Nexus, rackpki.Operator},
	sledagentv1.SledAgentSim_ServiceDesc.ServiceName: {rackpki.Operator},
	sledagentv1.SimMigration_ServiceDesc.ServiceName: {rackpki.Sled},
	healthpb.Health_ServiceDesc.ServiceName:          {rackpki.Sled, rackpki.Nexus, rackpki.Operator},
}

// Server is a running sled-agent.
type Server struct {
	cfg        config.Config
	log        *zap.Logger
	listener   net.Listener
	grpc       *grpc.Server
	health     *health.Server
	reconciler *reconciler.Reconciler
	zones      *sim.Runtime
	processes  *process.Runtime
	lock       *dirlock.Lock
	publisher  *nexusclient.Publisher
	nexusConn  *grpc.ClientConn
	hypervisor *hypervisorsim.Hypervisor
	peer       *hypervisorsim.GRPCPeer
	stopAgent  context.CancelFunc
	background sync.WaitGroup
}

// New opens the ledger and the zone runtime, adopts the zones already
// running, starts the reconciler and listens. It fails, and starts nothing,
// when the ledger has copies but none is valid (SPEC Z3).
func New(cfg config.Config, log *zap.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sledID := uuid.MustParse(cfg.SledID)
	log = log.With(zap.String("sled_id", sledID.String()))
	trust, err := rackpki.LoadDir(cfg.TLSDir)
	if err != nil {
		return nil, fmt.Errorf("tls_dir: %w", err)
	}
	if want := (rackpki.Identity{Kind: rackpki.Sled, ID: sledID.String()}); trust.Identity != want {
		return nil, fmt.Errorf("tls_dir: the certificate names %s, not this sled (%s)", trust.Identity, want)
	}
	creds, err := grpcconn.ServerCredentials(trust)
	if err != nil {
		return nil, err
	}

	// Two agents on one sled's state would each adopt and stop the other's
	// zones and write over each other's ledgers.
	stateDirs := append(slices.Clone(cfg.LedgerDirs), cfg.ZoneStateDir)
	if cfg.ZoneRoot != "" {
		stateDirs = append(stateDirs, cfg.ZoneRoot)
	}
	lock, err := dirlock.Acquire("sled-agent", stateDirs...)
	if err != nil {
		return nil, err
	}
	zones, err := sim.Open(cfg.ZoneStateDir)
	if err != nil {
		lock.Release()
		return nil, fmt.Errorf("opening the simulated zone runtime: %w", err)
	}
	commands := map[zoneconfig.Kind][]string{}
	for kind, command := range cfg.ZoneCommands {
		commands[zoneconfig.Kind(kind)] = strings.Fields(command)
	}
	processes, err := process.Open(process.Config{Root: cfg.ZoneRoot, SledTLSDir: cfg.TLSDir, Commands: commands,
		StopBound: time.Duration(cfg.ZoneStopTimeout), StartGrace: processZoneStartGrace, PollPeriod: processZonePollPeriod,
		Log: log.Named("zones")})
	if err != nil {
		zones.Close()
		lock.Release()
		return nil, fmt.Errorf("opening the process zone runtime: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			zones.Close()
			processes.Close()
			lock.Release()
		}
	}()
	zoneFaults := faults.Wrap(zoneruntime.ByKind{Process: processes, Sim: zones})
	rec, err := reconciler.New(zoneFaults, reconciler.Config{
		Retry: backoff.Policy{
			Initial: time.Duration(cfg.ReconcilerRetryInitial),
			Max:     time.Duration(cfg.ReconcilerRetryMax),
			Jitter:  0.5,
		},
		ShutdownTimeout: time.Duration(cfg.ZoneShutdownTimeout),
	}, log.Named("reconciler"))
	if err != nil {
		return nil, err
	}
	zonesLedger, err := ledger.Open(cfg.LedgerDirs, log.Named("ledger"), rec.SetDesired,
		ledger.ForSled(zoneconfig.Sled{Zpools: cfg.Zpools}))
	if err != nil {
		return nil, err
	}
	var desired *zoneconfig.Config
	if cur, ok := zonesLedger.Current(); ok {
		desired = &cur
	}
	processes.OnExit(rec.Poke)
	if err := rec.Start(context.Background(), desired); err != nil {
		return nil, err
	}
	// VMMs: the simulated hypervisor, the manager that owns their
	// generations, and the publisher that tells nexus.
	var nexusConn *grpc.ClientConn
	var nexus nexusv1.NexusInternalClient
	if len(cfg.NexusAddress) > 0 {
		if nexusConn, err = grpcconn.DialAny(cfg.NexusAddress, trust, rackpki.Identity{Kind: rackpki.Nexus}, 0); err != nil {
			rec.Stop()
			return nil, fmt.Errorf("nexus_address: %w", err)
		}
		nexus = nexusv1.NewNexusInternalClient(nexusConn)
	} else {
		log.Info("no nexus_address: running without nexus; VMM updates are not published")
	}
	publisher := nexusclient.NewPublisher(nexus, nexusclient.PublisherConfig{
		SledID:         sledID,
		Retry:          backoff.Policy{Initial: time.Duration(cfg.PublishRetryInitial), Max: time.Duration(cfg.PublishRetryMax), Jitter: 0.5},
		AttemptTimeout: time.Duration(cfg.NexusCallTimeout),
	}, log.Named("publisher"))
	mode := hypervisorsim.ModeAuto
	if cfg.HypervisorMode == "explicit" {
		mode = hypervisorsim.ModeExplicit
	}
	migrationPeer := &hypervisorsim.GRPCPeer{Timeout: time.Duration(cfg.NexusCallTimeout), Trust: trust}
	hypervisor := hypervisorsim.New(mode, time.Duration(cfg.VMMTransitionDelay), migrationPeer)
	vmms := vmm.NewManager(hypervisor, publisher, log.Named("vmm"))
	hypervisor.SetObserver(vmms.Observe)

	sled := app.Sled{ID: sledID, NCPUs: cfg.NCPUs, MemoryBytes: cfg.MemoryGiB << 30, Zpools: cfg.Zpools}
	agent := app.New(sled, zonesLedger, rec, vmms)

	lis, err := net.Listen("tcp", cfg.ListenAddress)
	if err != nil {
		rec.Stop()
		hypervisor.Close()
		publisher.Close()
		migrationPeer.Close()
		if nexusConn != nil {
			nexusConn.Close()
		}
		return nil, fmt.Errorf("listening on %s: %w", cfg.ListenAddress, err)
	}
	rpcFaults := &api.RPCFaults{}
	interceptors := []grpc.UnaryServerInterceptor{logging.UnaryServerInterceptor(log, ""), grpcconn.Authorize(callers)}
	if cfg.FaultInjection {
		interceptors = append(interceptors, rpcFaults.Interceptor())
	}
	srv := grpc.NewServer(creds, grpc.ChainUnaryInterceptor(interceptors...),
		grpc.ChainStreamInterceptor(grpcconn.AuthorizeStream(callers)))
	sledagentv1.RegisterSledAgentServer(srv, api.NewSledAgent(agent))
	serving := []string{"", sledagentv1.SledAgent_ServiceDesc.ServiceName}
	if cfg.FaultInjection {
		sledagentv1.RegisterSledAgentSimServer(srv, api.NewSledAgentSim(agent, zoneFaults, hypervisor, rpcFaults))
		serving = append(serving, sledagentv1.SledAgentSim_ServiceDesc.ServiceName)
	}
	sledagentv1.RegisterSimMigrationServer(srv, api.NewSimMigration(hypervisor))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	for _, svc := range serving {
		hs.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	log.Info("sled-agent listening", zap.String("address", lis.Addr().String()),
		zap.Strings("ledger_dirs", cfg.LedgerDirs), zap.String("zone_state_dir", cfg.ZoneStateDir))
	ok = true
	s := &Server{cfg: cfg, log: log, listener: lis, grpc: srv, health: hs, reconciler: rec, zones: zones, processes: processes, lock: lock,
		publisher: publisher, nexusConn: nexusConn, hypervisor: hypervisor, peer: migrationPeer}
	agentCtx, stop := context.WithCancel(context.Background())
	s.stopAgent = stop
	if nexus != nil {
		advertise := cfg.AdvertiseAddress
		if advertise == "" {
			advertise = lis.Addr().String()
		}
		s.background.Add(1)
		go func() {
			defer s.background.Done()
			nexusclient.RunRegistrar(agentCtx, nexus, nexusclient.RegistrarConfig{
				Sled: &nexusv1.RegisterSledRequest{SledId: sledID.String(), Address: advertise,
					Ncpus: sled.NCPUs, MemoryBytes: sled.MemoryBytes, Zpools: sled.Zpools},
				HeartbeatPeriod: time.Duration(cfg.HeartbeatPeriod),
				Retry:           backoff.Policy{Initial: time.Duration(cfg.PublishRetryInitial), Max: time.Duration(cfg.PublishRetryMax), Jitter: 0.5},
				AttemptTimeout:  time.Duration(cfg.NexusCallTimeout),
			}, log.Named("registrar"))
		}()
	}
	return s, nil
}

// Addr is the address the gRPC API listens on.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Serve answers requests until Shutdown.
func (s *Server) Serve() error {
	if err := s.grpc.Serve(s.listener); err != nil && err != grpc.ErrServerStopped {
		return err
	}
	return nil
}

// Shutdown stops accepting calls, lets calls in flight finish until ctx ends,
// then stops the reconciler. Zones keep running: they belong to the runtime,
// and the next agent adopts them.
func (s *Server) Shutdown(ctx context.Context) {
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.log.Warn("graceful stop timed out; cutting remaining calls")
		s.grpc.Stop()
		<-stopped
	}
	s.stopAgent()
	s.background.Wait()
	// The hypervisor first: its VMMs die with the agent, and nothing they
	// would still do may reach nexus or another sled.
	s.hypervisor.Close()
	s.publisher.Close()
	s.peer.Close()
	if s.nexusConn != nil {
		s.nexusConn.Close()
	}
	s.reconciler.Stop()
	if err := s.zones.Close(); err != nil {
		s.log.Warn("closing the zone runtime", zap.Error(err))
	}
	// Zone processes keep running, for the next agent to adopt (Z8).
	s.processes.Close()
	s.lock.Release()
	s.log.Info("sled-agent stopped")
}
