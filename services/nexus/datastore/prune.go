package datastore

import (
	"context"
	"database/sql"
	"time"

	"github.com/google/uuid"
)

// Pruning history (SPEC N14): finished sagas with their logs, ended VMMs
// and resolved migrations, once they are older than the retention.
//
// Theory of operation.
//
// What may go. A saga in state done or unwound is final: no engine touches
// it again (saga.State.Finished; a stuck one waits for an operator and is
// kept). A VMM in state destroyed, failed or saga_unwound has ended; a
// migration whose two sides completed or failed (or that was deleted) is
// resolved. Each is pruned once it ended before the cutoff (now minus the
// retention), unless something still points at it:
//   - an instance: its active or target VMM (an ended active VMM shows the
//     instance stopping or failed until an update unlinks it, N4), its
//     migration, or, for a saga, its updater lock (the operator's view of
//     who holds what, X6, names the saga);
//   - a migration not yet resolved that names the VMM as a side.
//
// What an unfinished saga may still need. A saga node that runs again
// after a crash, or after its saga moved to another replica (X4), finds
// its work by id: VMMAllocate and VMMAllocateOn return the sled of a VMM
// whose id exists and place a new one otherwise, MigrationInsert leaves an
// existing row alone and inserts a missing one. Were such a row pruned
// under a saga that is still running or unwinding, the node would create
// it again: a VMM placed anew for a saga whose instance has moved on. Every row
// a saga creates is created after the saga (its time_created is later than
// the saga's), so no VMM or migration created at or after the oldest
// unfinished saga's time_created, less pruneClockMargin for the clocks of
// the replicas that wrote the two, is pruned: the horizon. A saga created
// after the horizon was read creates only rows newer than it, and those
// ended too recently to be pruned anyway (the retention is far longer than
// a pass). Stuck sagas count as unfinished: an operator may yet ask for
// their undo again. While one stays, rows created since are kept.
//
// Several replicas at once. Each transaction chooses at most a batch of
// rows and deletes them by id, so no lock is held for long, and every pass
// loops until a batch comes back short. On PostgreSQL (READ COMMITTED)
// each batch locks the rows it chose FOR UPDATE SKIP LOCKED: two replicas
// pruning at once take disjoint batches, neither waits for the other nor
// deadlocks, and a row another replica already deleted is not chosen.
// SQLite runs one writer at a time. Deleting is idempotent, so a pass cut
// short is finished by the next. Node events are deleted before their saga
// in the same transaction (saga_node_event.saga_id references saga);
// nothing references a VMM or a migration by key.

// The batches' bounds; variables so that tests can make them small.
var (
	// pruneBatch bounds the VMMs or migrations one transaction deletes.
	pruneBatch = 1000
	// pruneSagaBatch bounds the sagas one transaction deletes, with their
	// logs: a few dozen events each.
	pruneSagaBatch = 100
)

const (
	// pruneClockMargin is how much earlier than the oldest unfinished
	// saga a VMM or migration must have been created to be pruned: more
	// than the clocks of two replicas ever disagree.
	pruneClockMargin = time.Hour
)

// Pruned is what a pass of PruneHistory deleted, and what held it back.
type Pruned struct {
	Sagas, SagaEvents, VMMs, Migrations int64
	// OldestOpenSaga is the oldest unfinished (or stuck) saga, which keeps
	// the VMMs and migrations created since; Nil when there is none.
	OldestOpenSaga uuid.UUID
	// Horizon is the time_created before which VMMs and migrations could
	// be pruned.
	Horizon time.Time
}

// Total is how many rows the pass deleted.
func (p Pruned) Total() int64 { return p.Sagas + p.SagaEvents + p.VMMs + p.Migrations }

// PruneHistory deletes, in batches, the finished sagas (with their logs),
// ended VMMs and resolved migrations that ended before cutoff and that
// nothing needs any more (see the theory of operation above). It returns
// what it deleted, also when it stops on an error.
func (d *DataStore) PruneHistory(ctx context.Context, cutoff time.Time) (Pruned, error) {
	var p Pruned
	if err := d.pruneSagas(ctx, cutoff, &p); err != nil {
		return p, err
	}
	// The horizon is read again before each batch: an unfinished saga
	// that finished meanwhile no longer holds anything back, and one that
	// began meanwhile holds back nothing old enough to be pruned.
	for _, step := range []struct {
		table, query string
		deleted      *int64
	}{{"migration", d.pruneMigrationsQuery(), &p.Migrations}, {"vmm", d.pruneVMMsQuery(), &p.VMMs}} {
		if err := d.pruneBatches(ctx, cutoff, step.table, step.query, &p, step.deleted); err != nil {
			return p, err
		}
	}
	return p, nil
}

// pruneBatches deletes, a batch per transaction, the rows of table whose
// ids query (a SELECT of them before the horizon $1 and the cutoff $2, at
// most $3, locked) chooses, until a batch comes back short, adding how
// many it deleted to deleted. The DELETE names its rows by id, so that it
// finds each by its key (a DELETE … WHERE id IN (SELECT …) of its own
// scanned the whole table on PostgreSQL, history and all, for each batch).
func (d *DataStore) pruneBatches(ctx context.Context, cutoff time.Time, table, query string, p *Pruned, deleted *int64) error {
	for {
		if err := d.pruneHorizon(ctx, cutoff, p); err != nil {
			return err
		}
		var n int64
		err := d.inTx(ctx, func(tx *sql.Tx) error {
			ids, err := queryAll(ctx, tx, scanUUID, query, ts(p.Horizon), ts(cutoff), pruneBatch)
			if err != nil || len(ids) == 0 {
				return err
			}
			among, arg := d.idList("id", "$1", ids)
			res, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE `+among, arg)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return err
		}
		*deleted += n
		if n < int64(pruneBatch) {
			return nil
		}
	}
}

// openSagas is the condition that a saga s is unfinished or stuck: the
// WHERE of the saga_open partial index.
const openSagas = `s.state IN ('running', 'unwinding', 'stuck')`

// pruneHorizon sets p.Horizon: cutoff, or pruneClockMargin before the
// oldest open saga began if that is earlier.
func (d *DataStore) pruneHorizon(ctx context.Context, cutoff time.Time, p *Pruned) error {
	var (
		id      sql.NullString
		created dbTime
	)
	err := d.db.QueryRowContext(ctx, `SELECT s.id, s.time_created FROM saga s WHERE `+openSagas+`
		ORDER BY s.time_created, s.id LIMIT 1`).Scan(&id, &created)
	p.Horizon, p.OldestOpenSaga = cutoff, uuid.Nil
	switch {
	case isNoRows(err):
		return nil
	case err != nil:
		return d.classify(err)
	}
	p.OldestOpenSaga = uuid.MustParse(id.String)
	if h := created.Time.Add(-pruneClockMargin); h.Before(cutoff) {
		p.Horizon = h
	}
	return nil
}

// skipLocked ends a batch's SELECT: on PostgreSQL the rows chosen are
// locked, and rows another replica is pruning are left to it.
func (d *DataStore) skipLocked() string {
	if d.backend == Postgres {
		return ` FOR UPDATE SKIP LOCKED`
	}
	return ``
}

// unresolvedMigration is the condition that migration m is not resolved:
// the WHERE of the migration_unresolved partial index.
const unresolvedMigration = `m.time_deleted IS NULL AND (m.source_state IN ('pending', 'in_progress') OR m.target_state IN ('pending', 'in_progress'))`

// pruneVMMsQuery chooses a batch of ended VMMs created before the horizon
// ($1) that ended before the cutoff ($2), at most $3, that no instance
// points at and that no unresolved migration names.
func (d *DataStore) pruneVMMsQuery() string {
	return `SELECT v.id FROM vmm v
		WHERE v.state IN ('destroyed', 'failed', 'saga_unwound') AND v.time_created < $1 AND v.time_state_updated < $2
			AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.active_propolis_id = v.id)
			AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.target_propolis_id = v.id)
			AND NOT EXISTS (SELECT 1 FROM migration m WHERE ` + unresolvedMigration + `
				AND (m.source_propolis_id = v.id OR m.target_propolis_id = v.id))
		ORDER BY v.time_created LIMIT $3` + d.skipLocked()
}

// pruneMigrationsQuery chooses a batch of resolved migrations created
// before the horizon ($1) whose sides (or deletion) all ended before the
// cutoff ($2), at most $3, that no instance points at.
func (d *DataStore) pruneMigrationsQuery() string {
	return `SELECT m.id FROM migration m
		WHERE m.time_created < $1
			AND ((m.time_deleted IS NOT NULL AND m.time_deleted < $2)
				OR (m.source_state IN ('completed', 'failed') AND m.target_state IN ('completed', 'failed')
					AND COALESCE(m.time_source_updated, m.time_created) < $2
					AND COALESCE(m.time_target_updated, m.time_created) < $2))
			AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.migration_id = m.id)
		ORDER BY m.time_created LIMIT $3` + d.skipLocked()
}

// pruneSagas deletes finished sagas that finished before cutoff, and
// whose id holds no instance's updater lock, with their logs: a batch per
// transaction, the log first.
func (d *DataStore) pruneSagas(ctx context.Context, cutoff time.Time, p *Pruned) error {
	for {
		var ids []uuid.UUID
		var events int64
		err := d.inTx(ctx, func(tx *sql.Tx) error {
			var err error
			ids, err = queryAll(ctx, tx, scanUUID, `SELECT s.id FROM saga s
				WHERE s.state IN ('done', 'unwound') AND s.time_state_changed < $1
					AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.updater_id = s.id)
				ORDER BY s.time_state_changed LIMIT $2`+d.skipLocked(), ts(cutoff), pruneSagaBatch)
			if err != nil || len(ids) == 0 {
				return err
			}
			among, arg := d.idList("saga_id", "$1", ids)
			res, err := tx.ExecContext(ctx, `DELETE FROM saga_node_event WHERE `+among, arg)
			if err != nil {
				return err
			}
			if events, err = res.RowsAffected(); err != nil {
				return err
			}
			among, arg = d.idList("id", "$1", ids)
			_, err = tx.ExecContext(ctx, `DELETE FROM saga WHERE `+among, arg)
			return err
		})
		if err != nil {
			return err
		}
		p.Sagas += int64(len(ids))
		p.SagaEvents += events
		if len(ids) < pruneSagaBatch {
			return nil
		}
	}
}
