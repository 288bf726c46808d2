package datastore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver
	"go.uber.org/zap"
	_ "modernc.org/sqlite" // "sqlite" driver
)

// Backend names a database engine.
type Backend string

const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// DataStore is nexus's database.
type DataStore struct {
	db      *sql.DB
	backend Backend
	log     *zap.Logger
	// On PostgreSQL, force-terminate's two writes made at the same time
	// share statements (see gatherer); nil on SQLite, whose writers take
	// turns anyway.
	wishes  *gatherer[stopWish, *InstanceSnapshot]
	settles *gatherer[settleWrite, settleWritten]
}

// Open connects to the database and brings its schema up to date. For
// SQLite, dsn is a file path; for PostgreSQL, a connection string.
func Open(ctx context.Context, backend Backend, dsn string, log *zap.Logger) (*DataStore, error) {
	var (
		db  *sql.DB
		err error
	)
	switch backend {
	case SQLite:
		if err := os.MkdirAll(filepath.Dir(dsn), 0o755); err != nil {
			return nil, fmt.Errorf("creating the database directory: %w", err)
		}
		// WAL for concurrent readers; IMMEDIATE transactions so writers
		// queue on the busy timeout instead of failing on upgrade.
		db, err = sql.Open("sqlite", "file:"+dsn+
			"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate")
	case Postgres:
		if db, err = sql.Open("pgx", dsn); err == nil {
			// database/sql keeps 2 idle connections by default: under
			// concurrent requests every other transaction then opened a new
			// PostgreSQL connection (a process fork), which dominated the
			// force-terminate benchmark at 64 clients.
			db.SetMaxOpenConns(pgPoolSize)
			db.SetMaxIdleConns(pgPoolSize)
			db.SetConnMaxIdleTime(time.Minute)
		}
	default:
		return nil, fmt.Errorf("unknown database backend %q (want sqlite or postgres)", backend)
	}
	if err != nil {
		return nil, err
	}
	d := &DataStore{db: db, backend: backend, log: log}
	if backend == Postgres {
		d.wishes = &gatherer[stopWish, *InstanceSnapshot]{statement: d.stopWishesStatement,
			instance: func(w stopWish) uuid.UUID { return w.id }, log: log, slots: gatherSlots, most: gatherMost}
		d.settles = &gatherer[settleWrite, settleWritten]{statement: d.settlesStatement,
			instance: func(w settleWrite) uuid.UUID { return w.instance }, log: log, slots: gatherSlots, most: gatherMost}
	}
	if err := d.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

// Close releases the connections.
func (d *DataStore) Close() error { return d.db.Close() }

// Backend says which engine this is.
func (d *DataStore) Backend() Backend { return d.backend }

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

// migrate applies the migrations not yet applied, each in one transaction
// with its record, so a crash leaves every migration applied or not.
func (d *DataStore) migrate(ctx context.Context) error {
	if _, err := d.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY, name TEXT NOT NULL, time_applied TIMESTAMPTZ NOT NULL)`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	all, err := migrations()
	if err != nil {
		return err
	}
	for _, m := range all {
		err := d.inTx(ctx, func(tx *sql.Tx) error {
			var applied int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&applied); err != nil {
				return err
			}
			if applied > 0 {
				return nil
			}
			for _, stmt := range splitStatements(m.sql) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %04d_%s: %w\n%s", m.version, m.name, err, stmt)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, time_applied) VALUES ($1, $2, $3)`,
				m.version, m.name, ts(time.Now()))
			if err == nil {
				d.log.Info("applied schema migration", zap.Int("version", m.version), zap.String("name", m.name))
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// SchemaVersion returns the highest applied migration.
func (d *DataStore) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	err := d.db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v)
	return int(v.Int64), err
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

// inTx runs fn in a transaction, committing if it returns nil.
func (d *DataStore) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	return d.inTxWith(ctx, nil, fn)
}

const (
	// gatherSlots is how many shared statements of one kind may be in
	// flight: more slots answer sooner under moderate load, fewer share
	// more under heavy load.
	gatherSlots = 1
	// gatherMost bounds the calls sharing one statement.
	gatherMost = 64
	// pgPoolSize bounds nexus's connections to PostgreSQL, idle ones
	// included.
	pgPoolSize = 32
	// placementLock is the PostgreSQL advisory lock VMM placements hold.
	placementLock = 0x726b705f706c6163 // "rkp_plac"
)

// inPlacementTx runs fn, a check of a sled's free capacity and the VMM
// insert it allows, one placement at a time across every replica: on
// PostgreSQL under a transaction-level advisory lock, taken first, so that
// every later statement of fn sees every placement committed before it (READ
// COMMITTED); SQLite's IMMEDIATE transactions are serial already. A
// SERIALIZABLE transaction did the same job by aborting all but one of
// concurrent placements, which under a burst of starts ran out of retries
// and answered 500; waiting for a lock held for a few statements does not.
func (d *DataStore) inPlacementTx(ctx context.Context, fn func(*sql.Tx) error) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		if d.backend == Postgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(placementLock)); err != nil {
				return err
			}
		}
		return fn(tx)
	})
}

func (d *DataStore) inTxWith(ctx context.Context, opts *sql.TxOptions, fn func(*sql.Tx) error) error {
	tx, err := d.db.BeginTx(ctx, opts)
	if err != nil {
		return d.classify(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback() //nolint:errcheck // the original error matters
		return d.classify(err)
	}
	return d.classify(tx.Commit())
}

// ts is how a time is written: UTC RFC 3339 text with microseconds, which
// both backends store as the same instant.
func ts(t time.Time) string {
	return t.UTC().Truncate(time.Microsecond).Format("2006-01-02T15:04:05.000000Z07:00")
}

// dbTime scans a timestamp from either backend.
type dbTime struct {
	Time  time.Time
	Valid bool
}

func (t *dbTime) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		t.Valid = false
		return nil
	case time.Time:
		t.Time, t.Valid = v.UTC(), true
		return nil
	case string:
		return t.parse(v)
	case []byte:
		return t.parse(string(v))
	}
	return fmt.Errorf("cannot scan %T into a timestamp", src)
}

func (t *dbTime) parse(s string) error {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999Z07:00"} {
		if parsed, err := time.Parse(layout, s); err == nil {
			t.Time, t.Valid = parsed.UTC(), true
			return nil
		}
	}
	return fmt.Errorf("unparsable timestamp %q", s)
}

func (t dbTime) ptr() *time.Time {
	if !t.Valid {
		return nil
	}
	v := t.Time
	return &v
}

var errNoRows = sql.ErrNoRows

func isNoRows(err error) bool { return errors.Is(err, errNoRows) }
