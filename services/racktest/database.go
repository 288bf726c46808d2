package racktest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// Backends lists the database engines every nexus suite runs against (N1).
var Backends = []datastore.Backend{datastore.SQLite, datastore.Postgres}

// Database is one test's database: a fresh SQLite file, or a fresh
// database on the shared PostgreSQL server (pgtest).
type Database struct {
	Backend datastore.Backend
	URL     string
}

// NewDatabase makes an empty database of backend for the test. Without a
// PostgreSQL server the test is skipped, and fails with CI=true.
func NewDatabase(t testutil.TB, backend datastore.Backend) Database {
	t.Helper()
	db := Database{Backend: backend}
	if backend == datastore.Postgres {
		tb, ok := t.(testing.TB)
		if !ok {
			t.Fatalf("racktest: a fresh PostgreSQL database needs a test; a command gives Options.DatabaseURL")
		}
		db.URL = pgtest.DSN(tb)
	} else {
		db.URL = filepath.Join(t.TempDir(), "nexus.db")
	}
	return db
}

// Open opens a handle of the test's own on the database (migrating its
// schema), closed when the test ends; each call is a new handle, as a
// restarted nexus would have.
func (db Database) Open(t testutil.TB) *datastore.DataStore {
	t.Helper()
	ds, err := datastore.Open(context.Background(), db.Backend, db.URL, sledagenttest.TestLogger(t))
	if err != nil {
		t.Fatalf("opening the %s database: %v", db.Backend, err)
	}
	t.Cleanup(func() { ds.Close() })
	return ds
}

// ForEachBackend runs test as a subtest against a fresh database of each
// backend: the one suite both backends must pass (N1).
func ForEachBackend(t *testing.T, test func(t *testing.T, db Database)) {
	for _, b := range Backends {
		t.Run(string(b), func(t *testing.T) { test(t, NewDatabase(t, b)) })
	}
}

// Main runs a package's tests: it stops the PostgreSQL server pgtest
// started and removes the binaries Build made. Call it from TestMain.
func Main(m *testing.M) int {
	code := pgtest.Main(m)
	removeBuilds()
	return code
}
