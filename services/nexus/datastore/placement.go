package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
)

// placementLock is the PostgreSQL advisory lock VMM placements hold.
const placementLock = 0x726b705f706c6163 // "rkp_plac"

// sledUsed sums a column of the instances whose VMMs a sled s still runs:
// what a sled has given away.
func sledUsed(column string) string {
	return `COALESCE((SELECT sum(i.` + column + `) FROM vmm m JOIN instance i ON i.id = m.instance_id
		WHERE m.sled_id = s.id AND m.time_deleted IS NULL
			AND m.state NOT IN ('destroyed', 'failed', 'saga_unwound')), 0)`
}

// sledFits is true for a sled s with room for $ncpus CPUs and $memory bytes
// more.
func sledFits(ncpus, memory string) string {
	return `s.ncpus >= ` + ncpus + ` + ` + sledUsed("ncpus") + `
		AND s.memory_bytes >= ` + memory + ` + ` + sledUsed("memory_bytes")
}

// VMMAllocate records a new VMM for an instance on a sled that has room for
// it, choosing the least busy such sled and inserting the row in one
// placement (see inPlacementTx), so that concurrent starts cannot
// overcommit a sled. Idempotent: if the VMM id already exists its sled is
// returned. Only sleds seen since liveAfter are considered.
// model.ErrNoCapacity when no sled has room.
func (d *DataStore) VMMAllocate(ctx context.Context, v model.VMM, ncpus, memory int64, liveAfter time.Time) (uuid.UUID, error) {
	var chosen uuid.UUID
	err := d.inPlacementTx(ctx, v, func(tx *sql.Tx) (uuid.UUID, error) {
		var sled string
		err := tx.QueryRowContext(ctx, `
			SELECT s.id FROM sled s
			WHERE s.time_deleted IS NULL AND s.time_last_seen > $1 AND `+sledFits("$2", "$3")+`
			ORDER BY (SELECT count(*) FROM vmm m WHERE m.sled_id = s.id AND m.time_deleted IS NULL
				AND m.state NOT IN ('destroyed', 'failed', 'saga_unwound')), s.id
			LIMIT 1`, ts(liveAfter), ncpus, memory).Scan(&sled)
		if isNoRows(err) {
			return uuid.Nil, fmt.Errorf("%w: no sled has %d CPUs and %d bytes free", model.ErrNoCapacity, ncpus, memory)
		}
		if err != nil {
			return uuid.Nil, err
		}
		return uuid.Parse(sled)
	}, &chosen)
	return chosen, err
}

// VMMAllocateOn records a new VMM on the given sled if it has room: a
// migration target, whose sled the operator chose. Idempotent like
// VMMAllocate. model.ErrNoCapacity when the sled is full,
// model.ErrNotFound when it is not a live sled seen since liveAfter.
func (d *DataStore) VMMAllocateOn(ctx context.Context, v model.VMM, ncpus, memory int64, liveAfter time.Time) error {
	var chosen uuid.UUID
	return d.inPlacementTx(ctx, v, func(tx *sql.Tx) (uuid.UUID, error) {
		var live, fits bool
		err := tx.QueryRowContext(ctx, `SELECT s.time_last_seen > $2, `+sledFits("$3", "$4")+`
			FROM sled s WHERE s.id = $1 AND s.time_deleted IS NULL`,
			v.SledID.String(), ts(liveAfter), ncpus, memory).Scan(&live, &fits)
		switch {
		case isNoRows(err) || (err == nil && !live):
			return uuid.Nil, fmt.Errorf("%w: sled %s is not a live sled", model.ErrNotFound, v.SledID)
		case err != nil:
			return uuid.Nil, err
		case !fits:
			return uuid.Nil, fmt.Errorf("%w: sled %s does not have %d CPUs and %d bytes free", model.ErrNoCapacity, v.SledID, ncpus, memory)
		}
		return v.SledID, nil
	}, &chosen)
}

// inPlacementTx places v: unless a VMM with its id exists already (a saga
// node run again, whose sled is then the answer), choose picks its sled and
// the VMM is inserted there. It runs one placement at a time across every
// replica: on PostgreSQL under a transaction-level advisory lock, taken
// first, so that every later statement sees every placement committed
// before it (READ COMMITTED); SQLite's IMMEDIATE transactions are serial
// already. A SERIALIZABLE transaction did the same job by aborting all but
// one of concurrent placements, which under a burst of starts ran out of
// retries and answered 500; waiting for a lock held for a few statements
// does not.
func (d *DataStore) inPlacementTx(ctx context.Context, v model.VMM, choose func(*sql.Tx) (uuid.UUID, error), sled *uuid.UUID) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		if d.backend == Postgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(placementLock)); err != nil {
				return err
			}
		}
		var existing string
		err := tx.QueryRowContext(ctx, `SELECT sled_id FROM vmm WHERE id = $1`, v.ID.String()).Scan(&existing)
		if err == nil {
			*sled, err = uuid.Parse(existing)
			return err
		}
		if !isNoRows(err) {
			return err
		}
		if *sled, err = choose(tx); err != nil {
			return err
		}
		v.SledID = *sled
		return insertVMM(ctx, tx, v)
	})
}
