package nexus_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/pkg/testutil"
	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/racksetup"
	"github.com/rackplane/rackplane/services/racktest"
)

// N11, X3: from the commit that expunges a replica, it can claim no work
// (every claim checks its zone is active), so /readyz must stop saying it
// is ready then, not only once its replica_check task has next run.
// readiness already asks the database on every probe.
func TestN11_X3_AReplicaThatCanClaimNoWorkIsNotReadyBeforeItsReplicaCheckRuns(t *testing.T) {
	ntp := []uuid.UUID{uuid.New(), uuid.New()}
	r := racktest.StartInProcess(t, racktest.Options{Backend: datastore.Postgres, Nexuses: 2, Sleds: 2,
		RackSetup: true, SledProxies: true,
		PlanZones: func(i int, pools []string) []racksetup.Zone {
			return []racksetup.Zone{{ID: ntp[i].String(), Kind: "internal_ntp", Pool: pools[0], Address: fmt.Sprintf("127.0.1.%d:123", i+1)}}
		},
		NexusConfig: func(_ int, c *nexusconfig.Config) {
			// An operator's setting: the replica checks its own row
			// once a minute, not once a second.
			c.ReplicaCheckPeriod = duration.Duration(time.Hour)
		}})
	b := r.InProcessNexus(1)
	waitReadiness(t, b, http.StatusOK, "replica", "active")
	admin := r.Client(racktest.FleetAdmin)
	admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
	admin.MustCall(t, http.MethodPost,
		"/v1/system/hardware/sleds/"+r.Sled(1).ID().String()+"/zones/"+b.ID().String()+"/expunge", "", http.StatusOK)

	// B cannot serve: a create that starts the instance needs a saga,
	// which B may no longer create.
	throughB := racktest.NewClient(b.ExternalURL(), admin.Token)
	created := throughB.Call(t, http.MethodPost, "/v1/instances?project=demo",
		`{"name":"vm","description":"","hostname":"vm","memory":1073741824,"ncpus":1}`)
	if created.Status != http.StatusServiceUnavailable {
		t.Fatalf("instance create through expunged B answered %d %s; want 503 (X3)", created.Status, created.Body)
	}

	got, err := probe(t, b, "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	if got.status != http.StatusServiceUnavailable || !strings.HasPrefix(got.body.Checks["replica"], "expunged") {
		t.Fatalf("expunged B, whose instance create answered %d, says on /readyz %d %+v; want 503 with replica expunged",
			created.Status, got.status, got.body)
	}
}

// N11: a database ahead of this binary (a newer nexus applied migrations
// it does not know, e.g. 0006 dropped role_assignment, which the binary
// before it reads on every request) is as unfit as one behind it: /readyz
// must name the migrations instead of answering ready.
func TestN11_AReplicaWhoseDatabaseIsAheadOfItsMigrationsIsNotReady(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		r := racktest.StartInProcess(t, racktest.Options{Backend: db.Backend, DatabaseURL: db.URL})
		n := r.Nexus(0)
		waitReadiness(t, n, http.StatusOK, "migrations", "ok")
		newer := datastore.SchemaKnown() + 1
		if _, err := rawDatabase(t, db).Exec(`INSERT INTO schema_migrations (version, name, time_applied) VALUES ($1, $2, $3)`,
			newer, "from_a_newer_nexus", time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			t.Fatal(err)
		}
		got, err := probe(t, n, "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		if got.status != http.StatusServiceUnavailable || got.body.Checks["migrations"] == "ok" {
			t.Fatalf("with the database at schema %d and this nexus knowing %d, /readyz answered %d %+v; want 503 naming the migrations",
				newer, datastore.SchemaKnown(), got.status, got.body)
		}
	})
}

// N11: a database that answers reads but refuses every write (a standby,
// default_transaction_read_only) cannot serve any request that changes
// anything; /readyz must not answer ready then.
func TestN11_AReplicaWhoseDatabaseRefusesWritesIsNotReady(t *testing.T) {
	dsn := pgtest.DSN(t)
	r := racktest.StartInProcess(t, racktest.Options{Backend: datastore.Postgres, DatabaseURL: dsn})
	n := r.Nexus(0)
	waitReadiness(t, n, http.StatusOK, "database", "ok")
	admin := r.Client(racktest.FleetAdmin)
	admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"before","description":""}`, http.StatusCreated)

	conn := rawDatabase(t, racktest.Database{Backend: datastore.Postgres, URL: dsn})
	var name string
	if err := conn.QueryRow(`SELECT current_database()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	quoted := `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
	if _, err := conn.Exec(`ALTER DATABASE ` + quoted + ` SET default_transaction_read_only = on`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Exec(`ALTER DATABASE ` + quoted + ` RESET default_transaction_read_only`) }) //nolint:errcheck // best effort
	// The replica's pooled sessions were opened read-write; end them so
	// that it reconnects as any restarted replica would.
	if _, err := conn.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	var refused racktest.Response
	testutil.WaitFor(t, readinessBound, func() error {
		refused = admin.Call(t, http.MethodPost, "/v1/projects", fmt.Sprintf(`{"name":"p%d","description":""}`, time.Now().UnixNano()))
		if refused.Status/100 != 5 {
			return fmt.Errorf("project create answered %d %s; waiting for the read-only database to refuse it", refused.Status, refused.Body)
		}
		return nil
	})
	got, err := probe(t, n, "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	if got.status == http.StatusOK {
		t.Fatalf("every write fails (%d %s), yet /readyz answers %d %+v", refused.Status, refused.Body, got.status, got.body)
	}
}
