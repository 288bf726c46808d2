package nexus_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/wire"
	"github.com/rackplane/rackplane/services/racktest"
)

// readinessBound bounds a wait for readiness to change: the gRPC health
// loop's period, a bounded database check, and slack for a loaded machine.
const readinessBound = 15 * time.Second

// probeAnswer is what /healthz or /readyz answered.
type probeAnswer struct {
	status int
	body   nexus.Readiness
}

func probe(t *testing.T, n racktest.Nexus, path string) (probeAnswer, error) {
	t.Helper()
	resp, err := http.Get(n.MetricsURL() + path)
	if err != nil {
		return probeAnswer{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return probeAnswer{}, err
	}
	a := probeAnswer{status: resp.StatusCode}
	if err := json.Unmarshal(data, &a.body); err != nil {
		return a, fmt.Errorf("GET %s: %d %s: %v", path, resp.StatusCode, data, err)
	}
	return a, nil
}

// healthServices are the gRPC health services a replica reports: the
// server as a whole, each API, and the replica's own.
func healthServices(n racktest.Nexus) []string {
	return []string{"", nexusv1.NexusInternal_ServiceDesc.ServiceName, nexusv1.NexusExternal_ServiceDesc.ServiceName,
		wire.ReplicaHealthService(n.ID())}
}

// waitReadiness waits until /readyz answers want with check naming
// result (a prefix), and every gRPC health service agrees.
func waitReadiness(t *testing.T, n racktest.Nexus, want int, check, result string) probeAnswer {
	t.Helper()
	var got probeAnswer
	testutil.WaitFor(t, readinessBound, func() error {
		var err error
		if got, err = probe(t, n, "/readyz"); err != nil {
			return err
		}
		if got.status != want || !strings.HasPrefix(got.body.Checks[check], result) {
			return fmt.Errorf("/readyz answered %d %+v; want %d with %s %q", got.status, got.body, want, check, result)
		}
		for _, svc := range healthServices(n) {
			err := racktest.Serving(t, n.InternalAddr(), svc)
			if serving := err == nil; serving != (want == http.StatusOK) {
				return fmt.Errorf("gRPC health of %q: %v, while /readyz answers %d", svc, err, want)
			}
		}
		return nil
	})
	return got
}

// N11: a running replica is alive and ready on its metrics listener,
// without a token, and its gRPC health says SERVING for every service.
func TestN11_ARunningReplicaIsAliveAndReady(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		r := racktest.StartInProcess(t, racktest.Options{Backend: db.Backend, DatabaseURL: db.URL, Sleds: 1})
		n := r.Nexus(0)
		resp, err := http.Get(n.MetricsURL() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"alive"`) {
			t.Fatalf("/healthz answered %d %s; want 200 alive", resp.StatusCode, body)
		}
		ready := waitReadiness(t, n, http.StatusOK, "replica", "active")
		want := map[string]string{"database": "ok", "migrations": "ok", "replica": "active"}
		if ready.body.Status != "ready" || fmt.Sprint(ready.body.Checks) != fmt.Sprint(want) {
			t.Fatalf("/readyz answered %+v; want ready with %v", ready.body, want)
		}
		// The probes are the operator's: the external listener has none.
		if resp := racktest.NewClient(n.ExternalURL(), "").Call(t, http.MethodGet, "/readyz", ""); resp.Status == http.StatusOK {
			t.Fatalf("the REST API answers /readyz without a token: %d %s", resp.Status, resp.Body)
		}
	})
}

// N11: a replica whose database no longer answers is alive but not ready,
// naming the database, and NOT_SERVING; once the database is back, it is
// ready again. On PostgreSQL only: the network between nexus and the
// server is cut, the way a replica loses its database. A SQLite database
// is a file the replica holds open, with no server or network to lose.
func TestN11_AReplicaWhoseDatabaseIsGoneIsNotReadyNamingTheDatabase(t *testing.T) {
	dsn := pgtest.DSN(t)
	proxy := racktest.StartProxy(t, racktest.FreeAddrs(t, 1)[0], postgresAddr(t, dsn))
	r := racktest.StartInProcess(t, racktest.Options{Backend: datastore.Postgres, DatabaseURL: throughProxy(t, dsn, proxy.Addr())})
	n := r.Nexus(0)
	waitReadiness(t, n, http.StatusOK, "database", "ok")

	proxy.Cut()
	gone := waitReadiness(t, n, http.StatusServiceUnavailable, "database", "unreachable")
	t.Logf("with its database gone, /readyz answers %+v", gone.body)
	if gone.body.Status != "not_ready" || !strings.HasPrefix(gone.body.Checks["migrations"], "unknown") ||
		gone.body.Checks["replica"] != "active" {
		t.Fatalf("with its database gone /readyz answered %+v; want not_ready, migrations unknown, replica active", gone.body)
	}
	if resp, err := http.Get(n.MetricsURL() + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("with its database gone /healthz answered %v, %v; want 200: the process still serves", resp, err)
	}

	proxy.Heal()
	waitReadiness(t, n, http.StatusOK, "database", "ok")
}

// N11, N1: a replica whose database lacks a migration this binary knows
// (an older schema) is not ready, naming the migrations, on either
// backend; once the migration is recorded again, it is ready.
func TestN11_AReplicaWhoseDatabaseLacksAMigrationIsNotReady(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		r := racktest.StartInProcess(t, racktest.Options{Backend: db.Backend, DatabaseURL: db.URL})
		n := r.Nexus(0)
		waitReadiness(t, n, http.StatusOK, "migrations", "ok")
		conn := rawDatabase(t, db)
		latest := datastore.SchemaKnown()
		var name string
		if err := conn.QueryRow(`SELECT name FROM schema_migrations WHERE version = $1`, latest).Scan(&name); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(`DELETE FROM schema_migrations WHERE version = $1`, latest); err != nil {
			t.Fatal(err)
		}
		older := waitReadiness(t, n, http.StatusServiceUnavailable, "migrations",
			fmt.Sprintf("the database is at schema version %d; this nexus needs %d", latest-1, latest))
		if older.body.Checks["database"] != "ok" {
			t.Fatalf("/readyz answered %+v; want the database ok", older.body)
		}
		if _, err := conn.Exec(`INSERT INTO schema_migrations (version, name, time_applied) VALUES ($1, $2, $3)`,
			latest, name, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			t.Fatal(err)
		}
		waitReadiness(t, n, http.StatusOK, "migrations", "ok")
	})
}

// N11, X3: an expunged replica is not ready, naming the replica, and
// NOT_SERVING, while the others stay ready. On PostgreSQL only: SQLite
// runs one replica, and the last active replica cannot be expunged.
func TestN11_X3_AnExpungedReplicaIsNotReadyNamingTheReplica(t *testing.T) {
	r, _ := zonedRack(t, datastore.Postgres, 2, 2)
	a, b := r.InProcessNexus(0), r.InProcessNexus(1)
	waitReadiness(t, b, http.StatusOK, "replica", "active")
	r.Client(racktest.FleetAdmin).MustCall(t, http.MethodPost,
		"/v1/system/hardware/sleds/"+r.Sled(1).ID().String()+"/zones/"+b.ID().String()+"/expunge", "", http.StatusOK)
	runTasks(t, b.Server(), nexus.TaskReplicaCheck)
	expunged := waitReadiness(t, b, http.StatusServiceUnavailable, "replica", "expunged")
	if expunged.body.Checks["database"] != "ok" || expunged.body.Checks["migrations"] != "ok" {
		t.Fatalf("expunged B's /readyz answered %+v; want only the replica failing", expunged.body)
	}
	waitReadiness(t, a, http.StatusOK, "replica", "active")
}

// postgresAddr is the host:port a PostgreSQL DSN connects to.
func postgresAddr(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))
}

// throughProxy is dsn connecting to addr instead.
func throughProxy(t *testing.T, dsn, addr string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Host = addr
		return u.String()
	}
	return dsn + " host=" + host + " port=" + port // keyword=value: the last one counts
}

// rawDatabase is a connection of the test's own, behind the replica's back.
func rawDatabase(t *testing.T, db racktest.Database) *sql.DB {
	t.Helper()
	driver, dsn := "sqlite", "file:"+db.URL+"?_pragma=busy_timeout(10000)"
	if db.Backend == datastore.Postgres {
		driver, dsn = "pgx", db.URL
	}
	conn, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
