// Package nexus assembles a nexus replica: the datastore, the application
// layer and the gRPC APIs, in the order they depend on each other.
// cmd/nexus runs it as a process and nexustest runs it inside tests.
package nexus

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/services/nexus/api"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
)

// Server is a running nexus replica.
type Server struct {
	log      *zap.Logger
	ds       *datastore.DataStore
	app      *app.Nexus
	internal net.Listener
	grpc     *grpc.Server
	health   *health.Server
}

// New opens the datastore (migrating its schema) and listens.
func New(ctx context.Context, cfg config.Config, log *zap.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With(zap.String("nexus_id", cfg.ID))
	if cfg.DatabaseBackend == string(datastore.SQLite) {
		if err := os.MkdirAll(filepath.Dir(cfg.DatabaseURL), 0o755); err != nil {
			return nil, err
		}
	}
	ds, err := datastore.Open(ctx, datastore.Backend(cfg.DatabaseBackend), cfg.DatabaseURL, log.Named("datastore"))
	if err != nil {
		return nil, fmt.Errorf("opening the database: %w", err)
	}
	nexusApp := app.New(ds, log.Named("app"))
	lis, err := net.Listen("tcp", cfg.InternalListen)
	if err != nil {
		ds.Close()
		return nil, fmt.Errorf("internal_listen %s: %w", cfg.InternalListen, err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(logCalls(log)))
	nexusv1.RegisterNexusInternalServer(srv, api.NewInternal(nexusApp))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	for _, svc := range []string{"", nexusv1.NexusInternal_ServiceDesc.ServiceName} {
		hs.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	log.Info("nexus listening", zap.String("internal_address", lis.Addr().String()),
		zap.String("database_backend", cfg.DatabaseBackend))
	return &Server{log: log, ds: ds, app: nexusApp, internal: lis, grpc: srv, health: hs}, nil
}

// InternalAddr is where sled-agents reach this nexus.
func (s *Server) InternalAddr() string { return s.internal.Addr().String() }

// DataStore is the replica's database, for tests that inspect it.
func (s *Server) DataStore() *datastore.DataStore { return s.ds }

// Serve answers requests until Shutdown.
func (s *Server) Serve() error {
	if err := s.grpc.Serve(s.internal); err != nil && err != grpc.ErrServerStopped {
		return err
	}
	return nil
}

// Shutdown stops accepting calls, lets calls in flight finish until ctx
// ends, and closes the database.
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
		s.grpc.Stop()
		<-stopped
	}
	s.ds.Close()
	s.log.Info("nexus stopped")
}

func logCalls(log *zap.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		fields := []zap.Field{zap.String("method", info.FullMethod), zap.Stringer("code", status.Code(err)),
			zap.Duration("elapsed", time.Since(start))}
		if err != nil {
			log.Info("rpc failed", append(fields, zap.Error(err))...)
		} else {
			log.Debug("rpc", fields...)
		}
		return resp, err
	}
}
