package datastore_test

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/racktest"
)

// N10, N1: migration 0006 moves roles from the principal to its tokens;
// on either backend a database written by the binary before it (schema 5:
// tokens, and role_assignment per principal) opens with every token
// keeping what its principal held, a revoked token staying revoked, and a
// principal's roles reaching each of its tokens.
func TestN10_ExistingTokensKeepTheirPrincipalsRolesThroughMigration0006(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		raw := rawConn(t, db)
		applyMigrationsUpTo(t, raw, 5)
		project := uuid.New()
		const at = "2026-11-01T00:00:00.000000Z"
		tokens := []struct{ id, secret, principal string }{
			{uuid.NewString(), "alice-1", "alice"},
			{uuid.NewString(), "alice-2", "alice"},
			{uuid.NewString(), "bob-1", "bob"},
			{uuid.NewString(), "carol-1", "carol"},
		}
		for _, tk := range tokens {
			mustExec(t, raw, `INSERT INTO api_token (id, token_hash, principal, time_created) VALUES ($1, $2, $3, $4)`,
				tk.id, authz.Hash(tk.secret), tk.principal, at)
		}
		mustExec(t, raw, `INSERT INTO api_token (id, token_hash, principal, time_created, time_deleted) VALUES ($1, $2, $3, $4, $4)`,
			uuid.NewString(), authz.Hash("alice-revoked"), "alice", at)
		for _, r := range [][3]string{{"alice", "fleet", ""}, {"alice", "project", project.String()}, {"bob", "project", project.String()}} {
			role := map[string]string{"fleet": "admin", "project": "collaborator"}[r[1]]
			if r[0] == "bob" {
				role = "viewer"
			}
			mustExec(t, raw, `INSERT INTO role_assignment (principal, resource_type, resource_id, role, time_created) VALUES ($1, $2, $3, $4, $5)`,
				r[0], r[1], r[2], role, at)
		}
		raw.Close()

		ds := db.Open(t)
		want := map[string][]string{
			"alice-1": {"fleet//admin", "project/" + project.String() + "/collaborator"},
			"alice-2": {"fleet//admin", "project/" + project.String() + "/collaborator"},
			"bob-1":   {"project/" + project.String() + "/viewer"},
			"carol-1": nil,
		}
		for secret, roles := range want {
			tok, err := ds.TokenByHash(ctx, authz.Hash(secret), now)
			if err != nil {
				t.Errorf("token %s after the migration: %v", secret, err)
				continue
			}
			var got []string
			for _, r := range tok.Roles {
				id := ""
				if r.ResourceID != nil {
					id = r.ResourceID.String()
				}
				got = append(got, r.Resource+"/"+id+"/"+r.Role)
			}
			slices.Sort(got)
			if !slices.Equal(got, roles) {
				t.Errorf("token %s has roles %v after the migration, want %v", secret, got, roles)
			}
		}
		if _, err := ds.TokenByHash(ctx, authz.Hash("alice-revoked"), now); err == nil {
			t.Errorf("a token revoked before the migration authenticates after it")
		}
	})
}

func rawConn(t *testing.T, db racktest.Database) *sql.DB {
	t.Helper()
	driver, dsn := "sqlite", "file:"+db.URL+"?_pragma=foreign_keys(1)"
	if db.Backend == datastore.Postgres {
		driver, dsn = "pgx", db.URL
	}
	if err := os.MkdirAll(filepath.Dir(db.URL), 0o755); err != nil && db.Backend == datastore.SQLite {
		t.Fatal(err)
	}
	conn, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// applyMigrationsUpTo applies migrations 1..last from the package's
// migrations directory as the binary of schema last did: each file's
// statements, then its schema_migrations row.
func applyMigrationsUpTo(t *testing.T, conn *sql.DB, last int) {
	t.Helper()
	mustExec(t, conn, `CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, time_applied TIMESTAMPTZ NOT NULL)`)
	for v := 1; v <= last; v++ {
		files, err := filepath.Glob(fmt.Sprintf("migrations/%04d_*.sql", v))
		if err != nil || len(files) != 1 {
			t.Fatalf("migration %d: %v %v", v, files, err)
		}
		text, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, stmt := range statements(string(text)) {
			mustExec(t, conn, stmt)
		}
		name := strings.TrimSuffix(strings.SplitN(filepath.Base(files[0]), "_", 2)[1], ".sql")
		mustExec(t, conn, `INSERT INTO schema_migrations (version, name, time_applied) VALUES ($1, $2, $3)`, v, name, "2026-11-01T00:00:00Z")
	}
}

// statements splits a migration as the datastore does: on semicolons
// that end a line, comment lines left out.
func statements(text string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") || trimmed == "" {
			continue
		}
		cur.WriteString(line + "\n")
		if strings.HasSuffix(trimmed, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

func mustExec(t *testing.T, conn *sql.DB, stmt string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(stmt, args...); err != nil {
		t.Fatalf("%v\n%s", err, stmt)
	}
}
