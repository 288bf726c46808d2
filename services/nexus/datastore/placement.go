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

// liveVMM is the condition that the VMM m is live: in one of the states
// that are not ended (model.VMMState.Terminal), listed. It is the WHERE of
// the vmm_live_by_sled and vmm_live_by_instance partial indexes (migration
// 0005), written as they write it, so that every hot path that asks for
// live VMMs reads those indexes, whose size follows the live VMMs only, and
// never the ended ones kept until they are pruned (SPEC N14): SQLite uses
// a partial index only when the query repeats its terms, and PostgreSQL
// only when it can prove the query implies them. The states are listed
// rather than the ended ones excluded because PostgreSQL estimates
// "state NOT IN (…)" as if the three were independent (a third of
// history left live), and then scans whole tables to join what it thinks
// is many rows; "state IN (…)" it estimates from its statistics, close to
// the truth. TestN14_LiveVMMStatesAreTheStatesNotEnded keeps the list
// whole.
const liveVMM = `m.time_deleted IS NULL AND m.state IN ('creating', 'starting', 'running', 'stopping', 'stopped', 'rebooting', 'migrating')`

// reserved is what the VMM m holds of its sled's column (ncpus or
// memory_bytes): what placement recorded on it, or, for a VMM placed
// before placements recorded it (migration 0005), its instance's size,
// looked up by key for that VMM alone.
func reserved(column string) string {
	return `COALESCE(m.` + column + `, (SELECT i.` + column + ` FROM instance i WHERE i.id = m.instance_id))`
}

// sledUsed sums what the live VMMs of sled s hold of a column: what the
// sled has given away. It reads the sled's live VMMs (vmm_live_by_sled),
// and neither the ended ones nor the instances.
func sledUsed(column string) string {
	return `COALESCE((SELECT sum(` + reserved(column) + `) FROM vmm m WHERE m.sled_id = s.id AND ` + liveVMM + `), 0)`
}

// sledFits is true for a sled s with room for $ncpus CPUs and $memory bytes
// more.
func sledFits(ncpus, memory string) string {
	return `s.ncpus >= ` + ncpus + ` + ` + sledUsed("ncpus") + `
		AND s.memory_bytes >= ` + memory + ` + ` + sledUsed("memory_bytes")
}

// placementQuery chooses the least busy live sled with room for $2 CPUs
// and $3 bytes: live when seen since $1, or one of lagging ($4 on): heard
// since $1 by this replica, their heartbeats not yet written (see
// heartbeats). What each sled has given away and how many VMMs it runs are
// summed in one pass over the live VMMs (vmm_live_by_sled), rather than
// three subqueries per sled, from what each VMM holds (see reserved),
// rather than by joining instances: its cost follows the live VMMs,
// however many ended VMMs and deleted instances the rack keeps (SPEC N14).
//
// Liveness orders the sleds rather than filtering them (the caller refuses
// a sled that is not live): every heartbeat moves time_last_seen past the
// newest value ANALYZE saw, so as a filter PostgreSQL took "seen in the
// last 7 s" for about one sled of 1,000, joined the sums by nested loop
// and summed the live VMMs once per sled: 920 ms a placement at 1,500
// VMMs, while placements take turns (scalebench).
func (d *DataStore) placementQuery(liveAfter time.Time, ncpus, memory int64) (string, []any) {
	lagging, arg := d.idList("s.id", "$4", d.heartbeats.lagging(liveAfter))
	return `
	WITH used AS (
		SELECT m.sled_id, count(*) AS vmms, sum(` + reserved("ncpus") + `) AS ncpus,
			sum(` + reserved("memory_bytes") + `) AS memory_bytes
		FROM vmm m WHERE ` + liveVMM + `
		GROUP BY m.sled_id)
	SELECT s.id, (s.time_last_seen > $1 OR ` + lagging + `) AS live FROM sled s LEFT JOIN used u ON u.sled_id = s.id
	WHERE s.time_deleted IS NULL
		AND s.ncpus >= $2 + COALESCE(u.ncpus, 0) AND s.memory_bytes >= $3 + COALESCE(u.memory_bytes, 0)
	ORDER BY live DESC, COALESCE(u.vmms, 0), s.id
	LIMIT 1`, []any{ts(liveAfter), ncpus, memory, arg}
}

// VMMAllocate records a new VMM for an instance on a sled that has room for
// it, choosing the least busy such sled and inserting the row in one
// placement (see inPlacementTx), so that concurrent starts cannot
// overcommit a sled. The VMM holds ncpus and memory of its sled until it
// ends. Idempotent: if the VMM id already exists its sled is
// returned. Only sleds seen within liveness are considered, judged once
// the placement's turn has come (a placement that waited for its turn
// must not take a sled that went silent meanwhile).
// model.ErrNoCapacity when no sled has room.
func (d *DataStore) VMMAllocate(ctx context.Context, v model.VMM, ncpus, memory int64, liveness time.Duration) (uuid.UUID, error) {
	var chosen uuid.UUID
	err := d.inPlacementTx(ctx, v, func(tx *sql.Tx) (uuid.UUID, error) {
		var (
			sled string
			live bool
		)
		query, args := d.placementQuery(time.Now().Add(-liveness), ncpus, memory)
		err := tx.QueryRowContext(ctx, query, args...).Scan(&sled, &live)
		if isNoRows(err) {
			return uuid.Nil, fmt.Errorf("%w: no sled has %d CPUs and %d bytes free", model.ErrNoCapacity, ncpus, memory)
		}
		if err == nil && !live {
			// The operator's question is then why the sleds with room are
			// silent, not where capacity went.
			return uuid.Nil, fmt.Errorf("%w: no reachable sled has %d CPUs and %d bytes free; sleds with room, "+
				"%s among them, have not been heard from for %s", model.ErrNoCapacity, ncpus, memory, sled, liveness)
		}
		if err != nil {
			return uuid.Nil, err
		}
		return uuid.Parse(sled)
	}, ncpus, memory, &chosen)
	return chosen, err
}

// VMMAllocateOn records a new VMM on the given sled if it has room: a
// migration target, whose sled the operator chose. Idempotent like
// VMMAllocate. model.ErrNoCapacity when the sled is full,
// model.ErrNotFound when it is not a live sled seen within liveness.
func (d *DataStore) VMMAllocateOn(ctx context.Context, v model.VMM, ncpus, memory int64, liveness time.Duration) error {
	var chosen uuid.UUID
	return d.inPlacementTx(ctx, v, func(tx *sql.Tx) (uuid.UUID, error) {
		liveAfter := time.Now().Add(-liveness)
		var live, fits bool
		err := tx.QueryRowContext(ctx, sledRoomQuery,
			v.SledID.String(), ts(liveAfter), ncpus, memory).Scan(&live, &fits)
		live = live || d.heartbeats.seen(v.SledID, time.Time{}).After(liveAfter)
		switch {
		case isNoRows(err) || (err == nil && !live):
			return uuid.Nil, fmt.Errorf("%w: sled %s is not a live sled", model.ErrNotFound, v.SledID)
		case err != nil:
			return uuid.Nil, err
		case !fits:
			return uuid.Nil, fmt.Errorf("%w: sled %s does not have %d CPUs and %d bytes free", model.ErrNoCapacity, v.SledID, ncpus, memory)
		}
		return v.SledID, nil
	}, ncpus, memory, &chosen)
}

// sledRoomQuery says whether sled $1 was seen since $2 and has room for $3
// CPUs and $4 bytes more, reading its live VMMs only (see sledUsed).
var sledRoomQuery = `SELECT s.time_last_seen > $2, ` + sledFits("$3", "$4") + `
	FROM sled s WHERE s.id = $1 AND s.time_deleted IS NULL`

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
//
// The VMM id makes a saga node run again idempotent only as long as the row
// is there: pruning (SPEC N14) never deletes a VMM created after the oldest
// unfinished saga began, so a saga that is still running finds its VMM (see
// PruneHistory).
func (d *DataStore) inPlacementTx(ctx context.Context, v model.VMM, choose func(*sql.Tx) (uuid.UUID, error),
	ncpus, memory int64, sled *uuid.UUID) error {
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
		return insertVMM(ctx, tx, v, ncpus, memory)
	})
}
