package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/google/uuid"
)

func stringOrNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// VMMInsert records a new VMM; ErrAlreadyExists for a taken id,
// ErrConstraint for an unknown instance or sled.
func (d *DataStore) VMMInsert(ctx context.Context, v VMM) error {
	_, err := d.db.ExecContext(ctx, `
		INSERT INTO vmm (id, instance_id, sled_id, state, failure_reason, state_generation, time_state_updated, time_created)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		v.ID.String(), v.InstanceID.String(), v.SledID.String(), string(v.Runtime.State),
		stringOrNil(v.Runtime.FailureReason), int64(v.Runtime.Generation), ts(v.Runtime.TimeUpdated), ts(v.TimeCreated))
	return d.classify(err)
}

const vmmColumns = `id, instance_id, sled_id, state, failure_reason, state_generation, time_state_updated, time_created`

// vmmRow holds the vmmColumns of one row while it is scanned.
type vmmRow struct {
	id, instance, sled, state string
	reason                    *string
	gen                       int64
	updated, created          dbTime
}

func (r *vmmRow) dest() []any {
	return []any{&r.id, &r.instance, &r.sled, &r.state, &r.reason, &r.gen, &r.updated, &r.created}
}

func (r *vmmRow) vmm() VMM {
	v := VMM{ID: uuid.MustParse(r.id), InstanceID: uuid.MustParse(r.instance), SledID: uuid.MustParse(r.sled),
		Runtime:     VMMRuntime{State: VMMState(r.state), Generation: uint64(r.gen), TimeUpdated: r.updated.Time},
		TimeCreated: r.created.Time}
	if r.reason != nil {
		v.Runtime.FailureReason = *r.reason
	}
	return v
}

func scanVMM(row interface{ Scan(...any) error }) (VMM, error) {
	var r vmmRow
	if err := row.Scan(r.dest()...); err != nil {
		return VMM{}, err
	}
	return r.vmm(), nil
}

// VMMGet returns a live VMM.
func (d *DataStore) VMMGet(ctx context.Context, id uuid.UUID) (VMM, error) {
	v, err := scanVMM(d.db.QueryRowContext(ctx,
		`SELECT `+vmmColumns+` FROM vmm WHERE id = $1 AND time_deleted IS NULL`, id.String()))
	if isNoRows(err) {
		return VMM{}, fmt.Errorf("%w: vmm %s", ErrNotFound, id)
	}
	return v, d.classify(err)
}

// VMMUpdateRuntime is vmm_update_runtime of SPEC N3: one conditional UPDATE
// that writes rt only if rt.Generation is newer than the stored one. It
// returns (true, nil) when it wrote, (false, nil) when the VMM exists but the
// generation did not advance, and ErrNotFound when there is no live VMM.
func (d *DataStore) VMMUpdateRuntime(ctx context.Context, id uuid.UUID, rt VMMRuntime) (bool, error) {
	res, err := d.db.ExecContext(ctx, `
		UPDATE vmm SET state = $2, state_generation = $3, time_state_updated = $4, failure_reason = $5
		WHERE id = $1 AND state_generation < $3 AND time_deleted IS NULL`,
		id.String(), string(rt.State), int64(rt.Generation), ts(rt.TimeUpdated), stringOrNil(rt.FailureReason))
	if err != nil {
		return false, d.classify(err)
	}
	return d.guardOutcome(ctx, res, "vmm", id)
}

// VMMAllocate records a new VMM for an instance on a sled that has room for
// it, choosing the sled and inserting the row in one transaction so that
// concurrent starts cannot overcommit a sled. Idempotent: if the VMM id
// already exists its sled is returned. Only sleds seen since liveAfter are
// considered. ErrNoCapacity when no sled has room.
func (d *DataStore) VMMAllocate(ctx context.Context, v VMM, ncpus, memory int64, liveAfter time.Time) (uuid.UUID, error) {
	var chosen uuid.UUID
	err := d.inPlacementTx(ctx, func(tx *sql.Tx) error {
		var existing string
		err := tx.QueryRowContext(ctx, `SELECT sled_id FROM vmm WHERE id = $1`, v.ID.String()).Scan(&existing)
		if err == nil {
			chosen = uuid.MustParse(existing)
			return nil
		}
		if !isNoRows(err) {
			return err
		}
		var sled string
		err = tx.QueryRowContext(ctx, `
			SELECT s.id FROM sled s
			WHERE s.time_deleted IS NULL AND s.time_last_seen > $1
				AND s.ncpus >= $2 + COALESCE((SELECT sum(i.ncpus) FROM vmm m JOIN instance i ON i.id = m.instance_id
					WHERE m.sled_id = s.id AND m.time_deleted IS NULL
						AND m.state NOT IN ('destroyed', 'failed', 'saga_unwound')), 0)
				AND s.memory_bytes >= $3 + COALESCE((SELECT sum(i.memory_bytes) FROM vmm m JOIN instance i ON i.id = m.instance_id
					WHERE m.sled_id = s.id AND m.time_deleted IS NULL
						AND m.state NOT IN ('destroyed', 'failed', 'saga_unwound')), 0)
			ORDER BY (SELECT count(*) FROM vmm m WHERE m.sled_id = s.id AND m.time_deleted IS NULL
				AND m.state NOT IN ('destroyed', 'failed', 'saga_unwound')), s.id
			LIMIT 1`, ts(liveAfter), ncpus, memory).Scan(&sled)
		if isNoRows(err) {
			return fmt.Errorf("%w: no sled has %d CPUs and %d bytes free", ErrNoCapacity, ncpus, memory)
		}
		if err != nil {
			return err
		}
		chosen = uuid.MustParse(sled)
		_, err = tx.ExecContext(ctx, `
			INSERT INTO vmm (id, instance_id, sled_id, state, state_generation, time_state_updated, time_created)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			v.ID.String(), v.InstanceID.String(), sled, string(v.Runtime.State), int64(v.Runtime.Generation),
			ts(v.Runtime.TimeUpdated), ts(v.TimeCreated))
		return err
	})
	return chosen, err
}

// VMMListActive returns the VMMs not yet terminal, for the instance
// watcher: the ones whose sleds should still know them.
func (d *DataStore) VMMListActive(ctx context.Context) ([]VMM, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+vmmColumns+` FROM vmm
		WHERE time_deleted IS NULL AND state NOT IN ('destroyed', 'failed', 'saga_unwound') ORDER BY id`)
	if err != nil {
		return nil, d.classify(err)
	}
	defer rows.Close()
	var out []VMM
	for rows.Next() {
		v, err := scanVMM(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// MarkOutcome is what an attempt to mark a VMM failed did. It is a value,
// not an error, so that a saga or endpoint deciding what to do next must
// handle each case (SPEC F10); database trouble is the error beside it.
type MarkOutcome int

const (
	// MarkWritten: the VMM is now failed.
	MarkWritten MarkOutcome = iota + 1
	// MarkStale: the VMM moved on since it was read (say a racing stop
	// destroyed it); nothing was written.
	MarkStale
)

// VMMMarkFailed marks v failed only if its generation is still the one read
// (v.Runtime.Generation): the guarded write of SPEC F5.
func (d *DataStore) VMMMarkFailed(ctx context.Context, v VMM, reason string, at time.Time) (MarkOutcome, error) {
	wrote, err := d.VMMUpdateRuntime(ctx, v.ID, VMMRuntime{State: VMMFailed, Generation: v.Runtime.Generation + 1,
		TimeUpdated: at, FailureReason: reason})
	switch {
	case err != nil:
		return 0, err
	case wrote:
		return MarkWritten, nil
	}
	return MarkStale, nil
}
