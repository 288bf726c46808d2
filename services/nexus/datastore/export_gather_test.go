package datastore

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// HoldRow locks the row of table with id, as another transaction (an
// operator's psql session, a long transaction) would, until release.
func (d *DataStore) HoldRow(ctx context.Context, table string, id uuid.UUID) (release func(), err error) {
	return d.holdInTx(ctx, `SELECT 1 FROM `+table+` WHERE id = $1 FOR UPDATE`, id.String())
}

// HoldTable locks the whole table, so that every statement that touches
// it waits, until release.
func (d *DataStore) HoldTable(ctx context.Context, table string) (release func(), err error) {
	return d.holdInTx(ctx, `LOCK TABLE `+table+` IN ACCESS EXCLUSIVE MODE`)
}

func (d *DataStore) holdInTx(ctx context.Context, statement string, args ...any) (func(), error) {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, statement, args...); err != nil {
		tx.Rollback()
		return nil, err
	}
	return func() { tx.Rollback() }, nil
}

// LockWaiters is how many of this database's sessions wait for a lock.
func (d *DataStore) LockWaiters(ctx context.Context) (int, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
	return n, err
}

// SetSharedStatementTimeout bounds the shared statements. Call it before
// any is made.
func (d *DataStore) SetSharedStatementTimeout(timeout time.Duration) {
	d.wishes.timeout = timeout
	d.settles.timeout = timeout
}

// SharedStatementsIdle is true when no shared statement is in flight or
// queued.
func (d *DataStore) SharedStatementsIdle() bool {
	idle := func(inFlight, queued int) bool { return inFlight == 0 && queued == 0 }
	d.wishes.mu.Lock()
	wishes := idle(d.wishes.inFlight, len(d.wishes.queue))
	d.wishes.mu.Unlock()
	d.settles.mu.Lock()
	settles := idle(d.settles.inFlight, len(d.settles.queue))
	d.settles.mu.Unlock()
	return wishes && settles
}
