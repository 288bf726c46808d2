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

// Start runs a nexus over a fresh database of backend and stops it when the
// test ends. Packages testing against PostgreSQL call pgtest.Main from
// TestMain.
func Start(t testing.TB, backend datastore.Backend) *nexus.Server {
	t.Helper()
	cfg := config.Default()
	cfg.ID = uuid.NewString()
	cfg.InternalListen = "127.0.0.1:0"
	cfg.ExternalListen = "127.0.0.1:0"
	cfg.DatabaseBackend = string(backend)
	if backend == datastore.SQLite {
		cfg.DatabaseURL = filepath.Join(t.TempDir(), "nexus.db")
	} else {
		cfg.DatabaseURL = pgtest.DSN(t)
	}
	srv, err := nexus.New(context.Background(), cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
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
