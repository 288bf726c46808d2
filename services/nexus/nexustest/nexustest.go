package nexustest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
)

// Backends lists the database engines every nexus test suite runs against.
var Backends = []datastore.Backend{datastore.SQLite, datastore.Postgres}

// Start runs a nexus over a fresh database of backend, every listener on a
// free loopback port, and stops it when the test ends. Packages testing
// against PostgreSQL call pgtest.Main from TestMain. opts go to nexus.New.
func Start(t testing.TB, backend datastore.Backend, opts ...nexus.Option) *nexus.Server {
	t.Helper()
	return StartWith(t, backend, Setup{Options: opts})
}

// StartWithLogger is Start with log as nexus's logger, for tests that check
// what nexus logs.
func StartWithLogger(t testing.TB, backend datastore.Backend, log *zap.Logger, opts ...nexus.Option) *nexus.Server {
	t.Helper()
	return StartWith(t, backend, Setup{Log: log, Options: opts})
}

// Setup is how StartWith departs from Start.
type Setup struct {
	// Log is nexus's logger; warnings and errors go to the test log when
	// nil.
	Log *zap.Logger
	// Config adjusts the configuration (a short timeout, say) after the
	// test's listeners and database are filled in.
	Config func(*config.Config)
	// Options go to nexus.New.
	Options []nexus.Option
}

// StartWith is Start with a Setup.
func StartWith(t testing.TB, backend datastore.Backend, setup Setup) *nexus.Server {
	t.Helper()
	log, opts := setup.Log, setup.Options
	if log == nil {
		log = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	}
	cfg := config.Default()
	cfg.ID = uuid.NewString()
	cfg.InternalListen = "127.0.0.1:0"
	cfg.ExternalListen = "127.0.0.1:0"
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.DatabaseBackend = string(backend)
	if backend == datastore.SQLite {
		cfg.DatabaseURL = filepath.Join(t.TempDir(), "nexus.db")
	} else {
		cfg.DatabaseURL = pgtest.DSN(t)
	}
	if setup.Config != nil {
		setup.Config(&cfg)
	}
	srv, err := nexus.New(context.Background(), cfg, log, opts...)
	if err != nil {
		t.Fatalf("starting nexus: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("nexus serve: %v", err)
		}
	})
	return srv
}

// Token mints a token for principal with grants on srv and returns it.
func Token(t testing.TB, srv *nexus.Server, principal string, grants ...app.Grant) string {
	t.Helper()
	secret, err := srv.App().TokenCreate(context.Background(), principal, grants, 0)
	if err != nil {
		t.Fatalf("minting a token: %v", err)
	}
	return secret
}

// AdminToken mints a fleet-admin token on srv.
func AdminToken(t testing.TB, srv *nexus.Server) string {
	return Token(t, srv, "test-admin", app.Grant{FleetAdmin: true})
}
