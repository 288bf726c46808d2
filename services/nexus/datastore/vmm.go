package datastore

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// VMMInsert records a new VMM, holding its instance's size of its sled;
// model.ErrAlreadyExists for a taken id, model.ErrConstraint for an
// unknown instance or sled.
func (d *DataStore) VMMInsert(ctx context.Context, v model.VMM) error {
	return d.classify(insertVMM(ctx, d.db, v, nil, nil))
}

// insertVMM records v holding ncpus and memory bytes of its sled (nil: its
// instance's), which placement sums for the sled while v is live.
func insertVMM(ctx context.Context, q queryer, v model.VMM, ncpus, memory any) error {
	_, err := q.ExecContext(ctx, `
		INSERT INTO vmm (id, instance_id, sled_id, state, failure_reason, state_generation, time_state_updated, time_created,
			ncpus, memory_bytes)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
			COALESCE($9, (SELECT ncpus FROM instance WHERE id = $2)), COALESCE($10, (SELECT memory_bytes FROM instance WHERE id = $2)))`,
		v.ID.String(), v.InstanceID.String(), v.SledID.String(), string(v.Runtime.State),
		stringOrNil(v.Runtime.FailureReason), int64(v.Runtime.Generation), ts(v.Runtime.TimeUpdated), ts(v.TimeCreated),
		ncpus, memory)
	return err
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

func (r *vmmRow) vmm() model.VMM {
	v := model.VMM{ID: uuid.MustParse(r.id), InstanceID: uuid.MustParse(r.instance), SledID: uuid.MustParse(r.sled),
		Runtime:     model.VMMRuntime{State: model.VMMState(r.state), Generation: uint64(r.gen), TimeUpdated: r.updated.Time},
		TimeCreated: r.created.Time}
	if r.reason != nil {
		v.Runtime.FailureReason = *r.reason
	}
	return v
}

func scanVMM(row rowScanner) (model.VMM, error) {
	var r vmmRow
	if err := row.Scan(r.dest()...); err != nil {
		return model.VMM{}, err
	}
	return r.vmm(), nil
}

// VMMGet returns a live VMM.
func (d *DataStore) VMMGet(ctx context.Context, id uuid.UUID) (model.VMM, error) {
	v, err := scanVMM(d.db.QueryRowContext(ctx,
		`SELECT `+vmmColumns+` FROM vmm WHERE id = $1 AND time_deleted IS NULL`, id.String()))
	if isNoRows(err) {
		return model.VMM{}, fmt.Errorf("%w: vmm %s", model.ErrNotFound, id)
	}
	return v, d.classify(err)
}

// VMMsGet returns the live VMMs among ids, in no order: one statement for
// a page of instances' views.
func (d *DataStore) VMMsGet(ctx context.Context, ids []uuid.UUID) ([]model.VMM, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	among, arg := d.idList("id", "$1", ids)
	return list(ctx, d, scanVMM, `SELECT `+vmmColumns+` FROM vmm WHERE time_deleted IS NULL AND `+among, arg)
}

// VMMUpdateRuntime is vmm_update_runtime of SPEC N3: one conditional UPDATE
// that writes rt only if rt.Generation is newer than the stored one. It
// returns (true, nil) when it wrote, (false, nil) when the VMM exists but the
// generation did not advance, and model.ErrNotFound when there is no live VMM.
func (d *DataStore) VMMUpdateRuntime(ctx context.Context, id uuid.UUID, rt model.VMMRuntime) (bool, error) {
	res, err := d.db.ExecContext(ctx, `
		UPDATE vmm SET state = $2, state_generation = $3, time_state_updated = $4, failure_reason = $5
		WHERE id = $1 AND state_generation < $3 AND time_deleted IS NULL`,
		id.String(), string(rt.State), int64(rt.Generation), ts(rt.TimeUpdated), stringOrNil(rt.FailureReason))
	if err != nil {
		return false, d.classify(err)
	}
	return d.guardOutcome(ctx, res, "vmm", id)
}

// VMMReportRuntime is VMMUpdateRuntime for a sled's report of its VMM
// (S3): the write happens only if the VMM is placed on that sled, in the
// same statement. A VMM placed on another sled is model.ErrNotPlacedHere
// and changes nothing.
func (d *DataStore) VMMReportRuntime(ctx context.Context, sled, id uuid.UUID, rt model.VMMRuntime) (bool, error) {
	res, err := d.db.ExecContext(ctx, `
		UPDATE vmm SET state = $2, state_generation = $3, time_state_updated = $4, failure_reason = $5
		WHERE id = $1 AND sled_id = $6 AND state_generation < $3 AND time_deleted IS NULL`,
		id.String(), string(rt.State), int64(rt.Generation), ts(rt.TimeUpdated), stringOrNil(rt.FailureReason), sled.String())
	if err != nil {
		return false, d.classify(err)
	}
	return d.reportOutcome(ctx, res, `SELECT sled_id FROM vmm WHERE id = $1 AND time_deleted IS NULL`, "vmm", id, sled)
}

// VMMListActive returns the VMMs not yet terminal, for the instance
// watcher: the ones whose sleds should still know them, by sled. It reads
// the live VMMs' partial index (see liveVMM), never the ended ones (SPEC
// N14); by sled, because ordered by id SQLite would rather scan the
// primary key in order, every VMM ever placed.
func (d *DataStore) VMMListActive(ctx context.Context) ([]model.VMM, error) {
	return list(ctx, d, scanVMM, activeVMMsQuery)
}

const activeVMMsQuery = `SELECT ` + vmmColumns + ` FROM vmm m WHERE ` + liveVMM + ` ORDER BY m.sled_id, m.id`

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
func (d *DataStore) VMMMarkFailed(ctx context.Context, v model.VMM, reason string, at time.Time) (MarkOutcome, error) {
	wrote, err := d.VMMUpdateRuntime(ctx, v.ID, model.VMMRuntime{State: model.VMMFailed, Generation: v.Runtime.Generation + 1,
		TimeUpdated: at, FailureReason: reason})
	switch {
	case err != nil:
		return 0, err
	case wrote:
		return MarkWritten, nil
	}
	return MarkStale, nil
}
