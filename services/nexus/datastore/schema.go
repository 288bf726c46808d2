package datastore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		base := strings.TrimSuffix(e.Name(), ".sql")
		num, name, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration file %s is not named NNNN_name.sql", e.Name())
		}
		text, err := fs.ReadFile(migrationFiles, path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: version, name: name, sql: string(text)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration versions must run 1, 2, 3 …; found %d at position %d", m.version, i+1)
		}
	}
	return out, nil
}

// migrationLock is the PostgreSQL advisory lock schema migrations hold.
const migrationLock = 0x726b705f6d696772 // "rkp_migr"

// migrate applies the migrations not yet applied, each in one transaction
// with its record, so a crash leaves every migration applied or not. On
// PostgreSQL the whole run holds a session advisory lock on a connection of
// its own: replicas started together on an empty database take turns, and
// each finds what the one before it applied (X1). Without the lock, two
// concurrent CREATE TABLE IF NOT EXISTS can both pass the check and one
// fails with "relation already exists". SQLite's IMMEDIATE transactions
// serialize the writers already.
func (d *DataStore) migrate(ctx context.Context) error {
	all, err := migrations()
	if err != nil {
		return err
	}
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return d.classify(err)
	}
	defer conn.Close()
	if d.backend == Postgres {
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLock)); err != nil {
			return fmt.Errorf("taking the schema migration lock: %w", err)
		}
		// Released with the session when the connection closes, should
		// this unlock fail.
		defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrationLock)) //nolint:errcheck // see above
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY, name TEXT NOT NULL, time_applied TIMESTAMPTZ NOT NULL)`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	for _, m := range all {
		if err := d.applyMigration(ctx, conn, m); err != nil {
			return err
		}
	}
	return nil
}

// applyMigration applies m in one transaction on conn, unless it is
// applied already.
func (d *DataStore) applyMigration(ctx context.Context, conn *sql.Conn, m migration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return d.classify(err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var applied int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&applied); err != nil {
		return d.classify(err)
	}
	if applied > 0 {
		return nil
	}
	for _, stmt := range splitStatements(m.sql) {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("migration %04d_%s: %w\n%s", m.version, m.name, d.classify(err), stmt)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, time_applied) VALUES ($1, $2, $3)`,
		m.version, m.name, ts(time.Now())); err != nil {
		return d.classify(err)
	}
	if err := tx.Commit(); err != nil {
		return d.classify(err)
	}
	d.log.Info("applied schema migration", zap.Int("version", m.version), zap.String("name", m.name))
	return nil
}

// SchemaVersion returns the highest applied migration.
func (d *DataStore) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	err := d.db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v)
	return int(v.Int64), err
}

// ReadOnly reports whether the database refuses writes: a PostgreSQL
// standby, or sessions made read-only (default_transaction_read_only).
// A SQLite file this process opened is always writable here.
func (d *DataStore) ReadOnly(ctx context.Context) (bool, error) {
	if d.backend != Postgres {
		return false, nil
	}
	var readOnly bool
	err := d.db.QueryRowContext(ctx, `SELECT current_setting('transaction_read_only') = 'on' OR pg_is_in_recovery()`).Scan(&readOnly)
	return readOnly, d.classify(err)
}

// SchemaKnown returns the highest migration this binary carries: a
// database at SchemaVersion below it lacks tables or columns this code uses.
func SchemaKnown() int {
	all, err := migrations()
	if err != nil {
		return 0 // Open fails on the same error first
	}
	return len(all)
}

// splitStatements splits a migration on semicolons that end a line; the
// migrations contain no semicolons inside literals.
func splitStatements(text string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") || trimmed == "" {
			continue
		}
		cur.WriteString(line)
		cur.WriteString("\n")
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
