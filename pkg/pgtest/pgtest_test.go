package pgtest

import (
	"database/sql"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestN1_EachCallGetsAFreshEmptyDatabase(t *testing.T) {
	for i := 0; i < 2; i++ {
		db, err := sql.Open("pgx", DSN(t))
		if err != nil {
			t.Fatal(err)
		}
		var tables int
		if err := db.QueryRow(`SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != 0 {
			t.Fatalf("database %d has %d tables", i, tables)
		}
		if _, err := db.Exec(`CREATE TABLE t (id INT PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
}

func TestWithDatabaseReplacesThePath(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u@h:5/postgres?sslmode=disable": "postgres://u@h:5/x?sslmode=disable",
		"postgres://u@h:5":                          "postgres://u@h:5/x",
		"host=h user=u":                             "host=h user=u dbname=x",
	} {
		if got := withDatabase(in, "x"); got != want {
			t.Errorf("withDatabase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStartServerRunsADurableServerAndStopRemovesIt(t *testing.T) {
	RequireServerBinaries(t)
	dsn, stop, err := StartServer(ServerOptions{Durable: true, Settings: []string{"shared_preload_libraries=pg_stat_statements"}})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for setting, want := range map[string]string{"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
		"shared_preload_libraries": "pg_stat_statements"} {
		var got string
		if err := db.QueryRow("SHOW " + setting).Scan(&got); err != nil || got != want {
			t.Errorf("%s = %q (%v), want %q", setting, got, err, want)
		}
	}
	if _, err := db.Exec("CREATE DATABASE other"); err != nil {
		t.Fatal(err)
	}
	other, err := sql.Open("pgx", WithDatabase(dsn, "other"))
	if err != nil {
		t.Fatal(err)
	}
	var name string
	if err := other.QueryRow("SELECT current_database()").Scan(&name); err != nil || name != "other" {
		t.Fatalf("WithDatabase: connected to %q (%v)", name, err)
	}
	other.Close()
	db.Close()
	stop()
	stop() // twice is fine
	again, _ := sql.Open("pgx", dsn)
	defer again.Close()
	if err := again.Ping(); err == nil {
		t.Fatal("the server still answers after stop")
	}
}

// N1: the tests' PostgreSQL comes from, in order, a DSN someone gives,
// local server binaries, a Docker engine (testcontainers), and otherwise
// from nowhere: then a test fails in CI and skips elsewhere. Each source
// is asked only when those before it are missing. CI has no Docker engine,
// so the order itself is what is tested here.
func TestN1_APostgreSQLIsTakenFromADSNThenLocalBinariesThenADockerEngine(t *testing.T) {
	missing := errors.New("missing")
	var asked []string
	binaries := func(err error) func() (string, error) {
		return func() (string, error) { asked = append(asked, "binaries"); return "/usr/lib/postgresql/15/bin", err }
	}
	docker := func(err error) func() error {
		return func() error { asked = append(asked, "docker"); return err }
	}
	for _, c := range []struct {
		name      string
		p         probes
		want      source
		wantAsked string
	}{
		{"a DSN wins without asking", probes{dsn: "postgres://db", binaries: binaries(nil), docker: docker(nil)}, fromDSN, ""},
		{"local binaries before Docker", probes{binaries: binaries(nil), docker: docker(nil)}, fromBinaries, "binaries"},
		{"Docker without binaries", probes{binaries: binaries(missing), docker: docker(nil)}, fromContainer, "binaries docker"},
		{"nothing", probes{binaries: binaries(missing), docker: docker(missing)}, "", "binaries docker"},
	} {
		asked = nil
		got, _, err := choose(c.p)
		if got != c.want || strings.Join(asked, " ") != c.wantAsked || (c.want == "") != (err != nil) {
			t.Errorf("%s: chose %q (%v) after asking %v, want %q after asking %q", c.name, got, err, asked, c.want, c.wantAsked)
		}
		if err != nil && (!strings.Contains(err.Error(), EnvDSN) || !strings.Contains(err.Error(), "Docker")) {
			t.Errorf("%s: the error does not say what was missing: %v", c.name, err)
		}
	}
	for env, fail := range map[string]bool{"true": true, "": false, "false": false} {
		if got := mustFail(func(string) string { return env }); got != fail {
			t.Errorf("CI=%q: fails %v, want %v", env, got, fail)
		}
	}
}
