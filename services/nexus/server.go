// Package nexus assembles a nexus replica: the datastore, the application
// layer and the gRPC APIs, in the order they depend on each other.
// cmd/nexus runs it as a process and services/racktest runs it inside
// tests.
package nexus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/inprocgrpc"
	"github.com/rackplane/rackplane/pkg/logging"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/services/nexus/api"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/background"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/gateway"
	"github.com/rackplane/rackplane/services/nexus/metrics"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	"github.com/rackplane/rackplane/services/nexus/sledclient"
	"github.com/rackplane/rackplane/services/nexus/wire"
)

// Server is a running nexus replica.
type Server struct {
	log          *zap.Logger
	ds           *datastore.DataStore
	app          *app.Nexus
	sagas        *saga.Engine
	sleds        *sledclient.Pool
	background   *background.Driver
	internal     net.Listener
	internalGRPC *grpc.Server
	external     net.Listener
	externalGRPC *grpc.Server
	rest         net.Listener
	// externalScheme is https when the external API has a certificate.
	externalScheme string
	http           *http.Server
	health         *health.Server
	// healthServices are the gRPC health services readiness sets, and
	// lastHealth the status last set, to log changes only.
	healthServices []string
	lastHealth     atomic.Int32
	metrics        *metrics.Metrics
	metricsLis     net.Listener
	metricsHTTP    *http.Server
	// stopped closes when Shutdown begins.
	stopped chan struct{}
}

// passing says an undo failed only because something it needs is away for
// now: its sled did not answer, which proves nothing about the sled (F7),
// or the database was failing over (R2). The undo is tried again until
// they answer, for up to awayUndoBound, rather than leave its saga stuck
// for an operator after a partition, a restart or a failover that heal by
// themselves (R1).
func passing(err error) bool {
	return errors.Is(err, model.ErrSledUnreachable) || errors.Is(err, model.ErrDatabaseUnavailable)
}

// uncommitted says an action failed without knowing whether its write
// committed: the database became unavailable mid-statement, as when it
// fails over or a partition cuts the connection (R2). Its undo then runs.
func uncommitted(err error) bool { return errors.Is(err, model.ErrDatabaseUnavailable) }

// awayUndoBound is how long an undo waits for its sled or the database
// before its saga is declared stuck: far longer than a sled-agent restart,
// a network blip or a failover, short enough that a sled lost for good
// reaches an operator.
const awayUndoBound = 5 * time.Minute

// New opens the datastore (migrating its schema) and listens. The options
// are for tests and test hooks (see Option).
func New(ctx context.Context, cfg config.Config, log *zap.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With(zap.String("nexus_id", cfg.ID))
	trust, err := loadTrust(cfg)
	if err != nil {
		return nil, err
	}
	ds, err := datastore.Open(ctx, datastore.Backend(cfg.DatabaseBackend), cfg.DatabaseURL, log.Named("datastore"))
	if err != nil {
		return nil, fmt.Errorf("opening the database: %w", err)
	}
	nexusID := uuid.MustParse(cfg.ID)
	sleds := sledclient.NewPool(ds, trust)
	o := collectOptions(opts)
	engine := saga.New(ds, nexusID, log.Named("saga"),
		append([]saga.Option{saga.WithUndoRetryWhile(passing, o.awayUndoBound), saga.WithAmbiguousActionErrors(uncommitted)},
			o.saga...)...)
	for _, t := range sagas.Templates(sagas.Deps{DS: ds, Sleds: sleds, SledLiveness: time.Duration(cfg.SledHeartbeatTimeout), Replica: nexusID,
		Log: log.Named("sagas")}) {
		if err := engine.Register(t); err != nil {
			ds.Close()
			return nil, err
		}
	}
	m := metrics.New()
	if err := errors.Join(m.RegisterSagas(engine.Stats, ds.SagaCountStuck), m.RegisterRack(ds)); err != nil {
		ds.Close()
		return nil, err
	}
	nexusApp := app.New(ds, engine, sleds, log.Named("app"),
		app.WithReplica(nexusID),
		app.WithSledRetryBound(time.Duration(cfg.SledUnreachableBound)),
		app.WithSledHeartbeatTimeout(time.Duration(cfg.SledHeartbeatTimeout)),
		app.WithLockWaitBound(time.Duration(cfg.UpdaterLockWaitBound)),
		app.WithAuthnCacheTTL(time.Duration(cfg.AuthnCacheTTL)),
		app.WithForceTerminateCounter(func(outcome string) { m.ForceTerminations.WithLabelValues(outcome).Inc() }),
		app.WithEventCounter(func(event string, n int) { m.Events.WithLabelValues(event).Add(float64(n)) }))
	s := &Server{log: log, ds: ds, app: nexusApp, sagas: engine, sleds: sleds, health: health.NewServer(),
		metrics: m, background: backgroundTasks(cfg, nexusApp, m, log.Named("background")), stopped: make(chan struct{}),
		externalScheme: "http"}
	if err := s.listen(ctx, cfg, trust); err != nil {
		s.closeListeners()
		ds.Close()
		return nil, err
	}
	// Recorded before it claims anything: an expunged replica stops here,
	// and never resumes its sagas (X3, X4).
	if err := nexusApp.RegisterReplica(ctx, s.internal.Addr().String(), s.rest.Addr().String()); err != nil {
		s.closeListeners()
		ds.Close()
		return nil, err
	}
	// Sagas this nexus owned when it stopped (or died) finish or unwind now.
	if n, err := engine.Recover(ctx); err != nil {
		log.Error("recovering sagas", zap.Error(err))
	} else if n > 0 {
		log.Info("recovered sagas", zap.Int("count", n))
	}
	go s.warmSledConnections()
	s.background.Start()
	// Health tells the truth from the first call on: SERVING only once
	// ready, then kept in line with readiness.
	s.updateHealth()
	go s.reportReadiness()
	go s.stopServingOnceExpunged()
	log.Info("nexus listening", zap.String("internal_address", s.internal.Addr().String()),
		zap.String("external_address", s.rest.Addr().String()),
		zap.String("metrics_address", s.metricsLis.Addr().String()),
		zap.String("database_backend", cfg.DatabaseBackend))
	return s, nil
}

// stopServingOnceExpunged waits until the replica notices it was expunged
// (X3), then reports itself not serving and stops its background tasks;
// the interceptors already refuse every call. Expunged tells the process
// to exit.
func (s *Server) stopServingOnceExpunged() {
	select {
	case <-s.app.Expunged():
	case <-s.stopped:
		return
	}
	s.health.Shutdown()
	s.background.Stop()
}

// loadTrust reads the replica's rack identity, which must be its own.
func loadTrust(cfg config.Config) (rackpki.Trust, error) {
	if cfg.TLSDir == "" {
		return rackpki.Trust{}, errors.New("tls_dir: is required: the replica's rack certificates (ca.crt, tls.crt, tls.key), " +
			"written by `nexus rack-certs`; there is no plaintext inside the rack")
	}
	trust, err := rackpki.LoadDir(cfg.TLSDir)
	if err != nil {
		return trust, fmt.Errorf("tls_dir: %w", err)
	}
	if want := (rackpki.Identity{Kind: rackpki.Nexus, ID: cfg.ID}); trust.Identity != want {
		return trust, fmt.Errorf("tls_dir: the certificate names %s, not this replica (%s)", trust.Identity, want)
	}
	return trust, nil
}

// internalCallers is who may call the internal listener (S2, S3): sleds
// call NexusInternal, each only for itself (api.Internal checks the sled
// id); any member of the rack may ask its health (rack setup, operators).
var internalCallers = grpcconn.Policy{
	nexusv1.NexusInternal_ServiceDesc.ServiceName: {rackpki.Sled},
	healthpb.Health_ServiceDesc.ServiceName:       {rackpki.Sled, rackpki.Nexus, rackpki.Operator},
}

// Expunged closes once this replica knows it was expunged: its process
// should shut it down and exit.
func (s *Server) Expunged() <-chan struct{} { return s.app.Expunged() }

// Names of the background tasks (N8), for Background().Activate.
const (
	TaskInstanceWatcher  = "instance_watcher"
	TaskInstanceUpdater  = "instance_updater"
	TaskReincarnation    = "reincarnation"
	TaskSledLiveness     = "sled_liveness"
	TaskZonesPush        = "zones_push"
	TaskInventory        = "inventory"
	TaskExpungeConfirm   = "expunge_confirm"
	TaskReplicaCheck     = "replica_check"
	TaskSagaReassignment = "saga_reassignment"
	TaskOrphanVMMs       = "orphan_vmms"
	TaskStopWishes       = "stop_wishes"
	TaskPruneHistory     = "prune_history"
)

func backgroundTasks(cfg config.Config, n *app.Nexus, m *metrics.Metrics, log *zap.Logger) *background.Driver {
	cooldown, retention := time.Duration(cfg.ReincarnationCooldown), time.Duration(cfg.HistoryRetention)
	return background.NewDriver(log, m,
		background.Task{Name: TaskInstanceWatcher, Period: time.Duration(cfg.InstanceWatcherPeriod), Run: n.WatchInstances},
		background.Task{Name: TaskInstanceUpdater, Period: time.Duration(cfg.InstanceUpdaterPeriod), Run: n.UpdateStaleInstances},
		background.Task{Name: TaskReincarnation, Period: time.Duration(cfg.ReincarnationPeriod),
			Run: func(ctx context.Context) (int, error) { return n.Reincarnate(ctx, cooldown) }},
		background.Task{Name: TaskSledLiveness, Period: time.Duration(cfg.SledLivenessPeriod),
			Run: n.CheckSledLiveness},
		background.Task{Name: TaskReplicaCheck, Period: time.Duration(cfg.ReplicaCheckPeriod), Run: n.CheckReplica},
		background.Task{Name: TaskZonesPush, Period: time.Duration(cfg.ZonesPushPeriod), Run: n.PushZones},
		background.Task{Name: TaskInventory, Period: time.Duration(cfg.InventoryPeriod), Run: n.CollectInventory},
		background.Task{Name: TaskExpungeConfirm, Period: time.Duration(cfg.ExpungeConfirmPeriod), Run: n.ConfirmExpunged},
		background.Task{Name: TaskSagaReassignment, Period: time.Duration(cfg.SagaReassignmentPeriod), Run: n.ReassignSagas},
		background.Task{Name: TaskOrphanVMMs, Period: time.Duration(cfg.OrphanVMMPeriod), Run: n.ReapOrphanVMMs},
		background.Task{Name: TaskStopWishes, Period: time.Duration(cfg.StopWishPeriod), Run: n.CarryOutStopWishes},
		background.Task{Name: TaskPruneHistory, Period: time.Duration(cfg.HistoryPrunePeriod),
			Run: func(ctx context.Context) (int, error) { return n.PruneHistory(ctx, retention) }},
	)
}

// Background is the replica's task driver, for tests and operators that
// activate a task now.
func (s *Server) Background() *background.Driver { return s.background }

// listen opens the four listeners: internal gRPC (sled-agents), external
// gRPC (NexusExternal), REST (the gateway, calling NexusExternal in
// process) and metrics (with the probes /healthz and /readyz). The
// internal API is registered on its own server only, so it cannot be
// reached through the external listeners (N10); metrics and probes, which
// need no token, have their own listener for the same reason (N11).
func (s *Server) listen(ctx context.Context, cfg config.Config, trust rackpki.Trust) error {
	rackCreds, err := grpcconn.ServerCredentials(trust)
	if err != nil {
		return err
	}
	externalTLS, err := externalTLSConfig(cfg)
	if err != nil {
		return err
	}
	if s.internal, err = net.Listen("tcp", cfg.InternalListen); err != nil {
		return fmt.Errorf("internal_listen %s: %w", cfg.InternalListen, err)
	}
	if s.external, err = net.Listen("tcp", cfg.ExternalGRPCListen); err != nil {
		return fmt.Errorf("external_grpc_listen %s: %w", cfg.ExternalGRPCListen, err)
	}
	if s.rest, err = net.Listen("tcp", cfg.ExternalListen); err != nil {
		return fmt.Errorf("external_listen %s: %w", cfg.ExternalListen, err)
	}
	if s.metricsLis, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
		return fmt.Errorf("metrics_listen %s: %w", cfg.MetricsListen, err)
	}
	// Metrics first, so that calls the auth interceptor refuses count too.
	s.internalGRPC = grpc.NewServer(rackCreds, grpc.ChainUnaryInterceptor(s.metrics.UnaryServerInterceptor(),
		logging.UnaryServerInterceptor(s.log, gateway.RequestIDHeader), grpcconn.Authorize(internalCallers),
		api.RefuseOnceExpunged(s.app)), grpc.ChainStreamInterceptor(grpcconn.AuthorizeStream(internalCallers)))
	nexusv1.RegisterNexusInternalServer(s.internalGRPC, api.NewInternal(s.app))
	external := []grpc.UnaryServerInterceptor{s.metrics.UnaryServerInterceptor(),
		logging.UnaryServerInterceptor(s.log, gateway.RequestIDHeader), api.RefuseOnceExpunged(s.app), api.Authenticate(s.app)}
	externalOpts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(external...)}
	if externalTLS != nil {
		externalOpts = append(externalOpts, grpc.Creds(credentials.NewTLS(externalTLS)))
	}
	s.externalGRPC = grpc.NewServer(externalOpts...)
	nexusv1.RegisterNexusExternalServer(s.externalGRPC, api.NewExternal(s.app))
	// The REST gateway calls the same handlers through the same
	// interceptors, in process: a loopback HTTP/2 hop per request was a
	// quarter of the CPU a force-terminate cost.
	inProcess := inprocgrpc.New(external...)
	nexusv1.RegisterNexusExternalServer(inProcess, api.NewExternal(s.app))
	for _, srv := range []*grpc.Server{s.internalGRPC, s.externalGRPC} {
		healthpb.RegisterHealthServer(srv, s.health)
	}
	// NOT_SERVING until New has checked readiness (updateHealth).
	s.healthServices = []string{"", nexusv1.NexusInternal_ServiceDesc.ServiceName, nexusv1.NexusExternal_ServiceDesc.ServiceName,
		wire.ReplicaHealthService(uuid.MustParse(cfg.ID))}
	for _, svc := range s.healthServices {
		s.health.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	handler, err := gateway.New(ctx, inProcess, gateway.WithObserver(s.metrics.ObserveHTTP),
		gateway.WithAuthenticator(api.CheckAuthorization(s.app)), gateway.WithLogger(s.log.Named("gateway")),
		gateway.WithBodyLimits(cfg.RequestBodyMaxBytes, time.Duration(cfg.RequestBodyTimeout)))
	if err != nil {
		return err
	}
	s.http = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	if externalTLS != nil {
		s.http.TLSConfig = externalTLS
		s.externalScheme = "https"
	}
	metricsMux := http.NewServeMux()
	metricsMux.Handle("GET /metrics", s.metrics.Handler(s.log.Named("metrics")))
	// Probes share the metrics listener: like Prometheus, a prober has no
	// token, and this listener is the operator's (N11).
	metricsMux.HandleFunc("GET /healthz", serveHealthz)
	metricsMux.HandleFunc("GET /readyz", s.serveReadyz)
	if cfg.Pprof {
		metricsMux.HandleFunc("/debug/pprof/", pprof.Index)
		metricsMux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		metricsMux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		metricsMux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.metricsHTTP = &http.Server{Handler: metricsMux, ReadHeaderTimeout: 10 * time.Second}
	return nil
}

// externalTLSConfig is the external API's HTTPS (S5), when configured: a
// certificate an operator's clients trust, no client certificates (the
// callers prove who they are with tokens).
func externalTLSConfig(cfg config.Config) (*tls.Config, error) {
	if cfg.ExternalTLSCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.ExternalTLSCertFile, cfg.ExternalTLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("external_tls_cert_file, external_tls_key_file: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
}

func (s *Server) closeListeners() {
	for _, l := range []net.Listener{s.internal, s.external, s.rest, s.metricsLis} {
		if l != nil {
			l.Close()
		}
	}
}

// InternalAddr is where sled-agents reach this nexus.
func (s *Server) InternalAddr() string { return s.internal.Addr().String() }

// ExternalURL is the base URL of the REST API.
func (s *Server) ExternalURL() string { return s.externalScheme + "://" + s.rest.Addr().String() }

// ExternalGRPCAddr is where NexusExternal is served over gRPC.
func (s *Server) ExternalGRPCAddr() string { return s.external.Addr().String() }

// MetricsURL is the base URL of the metrics listener; Prometheus scrapes
// MetricsURL()+"/metrics", probes ask "/healthz" and "/readyz".
func (s *Server) MetricsURL() string { return "http://" + s.metricsLis.Addr().String() }

// Metrics is the replica's metrics, for layers that count events of their
// own.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// App is the replica's application layer, for commands and tests that act
// as an operator (minting tokens, say).
func (s *Server) App() *app.Nexus { return s.app }

// Sagas is the replica's saga engine, for tests and operators that look at
// what it ran.
func (s *Server) Sagas() *saga.Engine { return s.sagas }

// DataStore is the replica's database, for tests that inspect it.
func (s *Server) DataStore() *datastore.DataStore { return s.ds }

// warmSledConnections connects to every sled while the first passes are
// still a period away, so that they do not each pay a handshake per sled
// (sledclient.Pool.Warm). It gives up when the replica stops.
func (s *Server) warmSledConnections() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stopped:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	ready, err := s.sleds.Warm(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("connecting to the sleds ahead of the first passes", zap.Int("ready", ready), zap.Error(err))
		return
	}
	s.log.Info("connected to the sleds ahead of the first passes", zap.Int("ready", ready), zap.Duration("elapsed", time.Since(start)))
}

// Serve answers requests on every listener until Shutdown.
func (s *Server) Serve() error {
	errs := make(chan error, 4)
	go func() { errs <- s.internalGRPC.Serve(s.internal) }()
	go func() { errs <- s.externalGRPC.Serve(s.external) }()
	go func() {
		if s.http.TLSConfig != nil {
			errs <- s.http.ServeTLS(s.rest, "", "")
			return
		}
		errs <- s.http.Serve(s.rest)
	}()
	go func() { errs <- s.metricsHTTP.Serve(s.metricsLis) }()
	var first error
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil && err != grpc.ErrServerStopped && err != http.ErrServerClosed && first == nil {
			first = err
		}
	}
	return first
}

// Shutdown stops accepting requests, lets requests in flight finish until
// ctx ends, and closes the database.
func (s *Server) Shutdown(ctx context.Context) {
	close(s.stopped)
	s.health.Shutdown()
	s.background.Stop()
	for _, srv := range []*http.Server{s.http, s.metricsHTTP} {
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}
	for _, srv := range []*grpc.Server{s.externalGRPC, s.internalGRPC} {
		stopped := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
			srv.Stop()
			<-stopped
		}
	}
	if err := s.sagas.Shutdown(ctx); err != nil {
		s.log.Warn("sagas did not all reach a durable point", zap.Error(err))
	}
	s.sleds.Close()
	s.ds.Close()
	s.log.Info("nexus stopped")
}
