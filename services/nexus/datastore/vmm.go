package datastore

import (
	"context"
	"fmt"

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

func scanVMM(row interface{ Scan(...any) error }) (VMM, error) {
	var (
		v                         VMM
		id, instance, sled, state string
		reason                    *string
		gen                       int64
		updated, created          dbTime
	)
	if err := row.Scan(&id, &instance, &sled, &state, &reason, &gen, &updated, &created); err != nil {
		return VMM{}, err
	}
	v.ID, v.InstanceID, v.SledID = uuid.MustParse(id), uuid.MustParse(instance), uuid.MustParse(sled)
	v.Runtime = VMMRuntime{State: VMMState(state), Generation: uint64(gen), TimeUpdated: updated.Time}
	if reason != nil {
		v.Runtime.FailureReason = *reason
	}
	v.TimeCreated = created.Time
	return v, nil
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
