package pgtest

import (
	"database/sql"
	"os"
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
