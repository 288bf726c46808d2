package datastore

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/services/nexus/model"
	"go.uber.org/zap"
	"modernc.org/sqlite"
	_ "modernc.org/sqlite" // "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"
)

// Backend names a database engine.
type Backend string

const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

// pgPoolSize bounds nexus's connections to PostgreSQL, idle ones included.
const pgPoolSize = 32

// DataStore is nexus's database.
type DataStore struct {
	db      *sql.DB
	backend Backend
	log     *zap.Logger
	// On PostgreSQL, force-terminate's two writes made at the same time
	// share statements (see gatherer); nil on SQLite, whose writers take
	// turns anyway.
	wishes  *gatherer[stopWish, *model.InstanceSnapshot]
	settles *gatherer[settleWrite, settleWritten]
	// Sleds' heartbeats, written a batch at a time (see heartbeats).
	heartbeats *heartbeats
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
		// queue on the busy timeout instead of failing on upgrade. The
		// pragmas run in this order on every new connection, the busy
		// timeout first so that the others wait on it too.
		db, err = sql.Open("sqlite", "file:"+dsn+
			"?_pragma=busy_timeout("+strconv.Itoa(int(sqliteBusyTimeout/time.Millisecond))+
			")&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate")
		if err == nil {
			// One connection: SQLite runs one writer at a time anyway, and
			// with a pool, hundreds of writers at once spun on its busy
			// handler until the busy timeout and failed with SQLITE_BUSY.
			// On one connection they queue in database/sql, in order,
			// each bounded by its own context. Other processes on the file
			// (nexus token create) still wait on the busy timeout.
			db.SetMaxOpenConns(1)
			err = firstSQLiteConnection(ctx, db)
		}
	case Postgres:
		if db, err = openPostgres(dsn); err == nil {
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
		if db != nil {
			db.Close()
		}
		return nil, err
	}
	d := &DataStore{db: db, backend: backend, log: log, heartbeats: newHeartbeats()}
	if backend == Postgres {
		d.wishes = newGatherer(log, func(w stopWish) uuid.UUID { return w.id },
			d.stopWishesStatement, func(s *model.InstanceSnapshot) bool { return s != nil }, d.stopWishAlone)
		// A settle the shared statement skipped is answered as one whose
		// guard missed, which InstanceSettleFrom settles afresh.
		d.settles = newGatherer(log, func(w settleWrite) uuid.UUID { return w.instance },
			d.settlesStatement, nil, d.settleAlone)
	}
	if err := d.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

// openPostgres opens a pool on dsn, which may name several hosts and
// target_session_attrs=read-write (R2): pgx then connects to the first
// host that accepts writes, and a connection to a failed primary breaks
// and is dropped. pgx checks target_session_attrs only when it connects,
// so a pooled connection whose server turned read-only while staying up
// (pg_auto_failover keeps the standby it promotes read-only through
// default_transaction_read_only until the old primary is written off)
// would answer every write "cannot execute … in a read-only transaction"
// for as long as it lives; it is dropped when next taken from the pool
// instead, so that the next connection looks for the primary.
// The server reports both settings on its own when they change (PostgreSQL
// 14 and later), so the check costs no round trip.
func openPostgres(dsn string) (*sql.DB, error) {
	config, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	return stdlib.OpenDB(*config, stdlib.OptionResetSession(func(_ context.Context, c *pgx.Conn) error {
		if readOnlyServer(c.PgConn()) {
			return driver.ErrBadConn
		}
		return nil
	})), nil
}

// readOnlyServer says whether the server last reported that it refuses
// writes: a standby, or a server made read-only.
func readOnlyServer(c *pgconn.PgConn) bool {
	return c.ParameterStatus("in_hot_standby") == "on" || c.ParameterStatus("default_transaction_read_only") == "on"
}

// sqliteBusyTimeout is how long a SQLite statement waits for a lock another
// connection or process holds.
const sqliteBusyTimeout = 10 * time.Second

// firstSQLiteConnection opens the pool's first connection, retrying while
// it fails with SQLITE_BUSY. Switching a new file to WAL needs the file to
// itself, and when processes open a new file together (a replica and
// `nexus token create`, or the X1 test's five) SQLite fails the switch at
// once, without waiting on the busy timeout, whenever waiting could
// deadlock. Once one connection has switched it, the mode is the file's and
// later connections need no such lock.
func firstSQLiteConnection(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(sqliteBusyTimeout)
	for attempt := 0; ; attempt++ {
		err := db.PingContext(ctx)
		var liteErr *sqlite.Error
		if !errors.As(err, &liteErr) || liteErr.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		if err := backoff.Sleep(ctx, sqliteOpenRetry.Delay(attempt)); err != nil {
			return err
		}
	}
}

// sqliteOpenRetry spaces the attempts of firstSQLiteConnection.
var sqliteOpenRetry = backoff.Policy{Initial: 5 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.5}

// Close releases the connections.
func (d *DataStore) Close() error { return d.db.Close() }

// Backend says which engine this is.
func (d *DataStore) Backend() Backend { return d.backend }

// inTx runs fn in a transaction, committing if it returns nil.
func (d *DataStore) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	return d.inTxWith(ctx, nil, fn)
}

// inTxWith is inTx with transaction options.
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

// queryer is what reads and writes need, in or out of a transaction.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// inIDOrder is the positions 0…n-1 ordered by id(i): the order rows are
// locked in, so that writers of the same rows cannot deadlock. Bytes order
// as the ids' text does (lowercase hex), without formatting them.
func inIDOrder(n int, id func(int) uuid.UUID) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return compareIDs(id(a), id(b)) })
	return order
}

// compareIDs orders ids as their text does (lowercase hex), without
// formatting them.
func compareIDs(x, y uuid.UUID) int { return bytes.Compare(x[:], y[:]) }
