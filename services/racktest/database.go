package racktest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
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

// Main runs a package's tests: it checks every REST exchange of the
// tests' clients against nexus's OpenAPI document (openapi.go), stops the
// PostgreSQL server pgtest started and removes the binaries Build made.
// It fails the binary when an exchange no test was named for disagreed
// with the document. Call it from TestMain.
func Main(m *testing.M) int {
	if err := checkServedDocument(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := pgtest.Main(m)
	removeBuilds()
	if reportOrphans(os.Stderr) && code == 0 {
		code = 1
	}
	return code
}

// FailUpdates makes every UPDATE of table whose new row satisfies
// condition (SQL over NEW, e.g. "NEW.state = 'starting'") fail with a real
// database error, until the returned func lifts it: a trigger, on either
// backend. It is how a test makes nexus fail in the middle of an action,
// after its side effect on a sled.
func (db Database) FailUpdates(t testutil.TB, table, condition string) (lift func()) {
	t.Helper()
	name := "injected_fault_" + table
	var install, remove []string
	switch db.Backend {
	case datastore.Postgres:
		install = []string{
			`CREATE FUNCTION ` + name + `() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN RAISE EXCEPTION 'injected database error'; END $$`,
			`CREATE TRIGGER ` + name + ` BEFORE UPDATE ON ` + table + ` FOR EACH ROW WHEN (` + condition + `)
				EXECUTE FUNCTION ` + name + `()`,
		}
		remove = []string{`DROP TRIGGER ` + name + ` ON ` + table, `DROP FUNCTION ` + name + `()`}
	default:
		install = []string{`CREATE TRIGGER ` + name + ` BEFORE UPDATE ON ` + table + ` WHEN ` + condition + `
			BEGIN SELECT RAISE(ABORT, 'injected database error'); END`}
		remove = []string{`DROP TRIGGER ` + name}
	}
	db.exec(t, install...)
	return func() { db.exec(t, remove...) }
}

// exec runs statements on a connection of its own.
func (db Database) exec(t testutil.TB, statements ...string) {
	t.Helper()
	// SQLite: wait on the busy timeout, as nexus's own connections do,
	// rather than fail while a replica writes.
	driver, dsn := "sqlite", "file:"+db.URL+"?_pragma=busy_timeout(10000)"
	if db.Backend == datastore.Postgres {
		driver, dsn = "pgx", db.URL
	}
	conn, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, stmt := range statements {
		if _, err := conn.Exec(stmt); err != nil {
			t.Fatalf("racktest: %s: %v", stmt, err)
		}
	}
}
