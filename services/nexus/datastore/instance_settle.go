package datastore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// SettleOutcome is what InstanceSettle did to the instance.
type SettleOutcome int

const (
	// SettleWritten: the instance runtime was rewritten.
	SettleWritten SettleOutcome = iota + 1
	// SettleUnchanged: the instance already is what its VMMs call for.
	SettleUnchanged
	// SettleLockHeld: it needs settling, but another update holds its
	// updater lock; that holder settles it when it releases (N6).
	SettleLockHeld
)

// SettleResult reports an InstanceSettle.
type SettleResult struct {
	Outcome SettleOutcome
	// After is what it left: the instance and the VMMs it points at.
	After model.InstanceSnapshot
	// VMMWritten says, for each write given, whether the guard let it in.
	VMMWritten []bool
}

// InstanceSettle makes the writes through the VMM guard, then rewrites the
// instance's runtime to what compute says its VMMs call for, unless someone
// other than holder holds its updater lock. It is the instance update of
// N6 done in one transaction (one commit) rather than a saga: taking the
// lock, applying and releasing it cannot be interrupted half-way. Pass
// uuid.Nil as holder when not holding the lock. compute must not have side
// effects: it may be called again when the instance changes meanwhile.
func (d *DataStore) InstanceSettle(ctx context.Context, id, holder uuid.UUID, writes []model.VMMWrite,
	compute func(model.InstanceSnapshot) (model.InstanceRuntime, bool)) (SettleResult, error) {
	var res SettleResult
	// Rows are locked in id order, so two settles of one instance writing
	// the same VMMs cannot deadlock.
	order := inIDOrder(len(writes), func(i int) uuid.UUID { return writes[i].ID })
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		res = SettleResult{VMMWritten: make([]bool, len(writes))}
		for _, i := range order {
			w := writes[i]
			r, err := tx.ExecContext(ctx, `
				UPDATE vmm SET state = $2, state_generation = $3, time_state_updated = $4, failure_reason = $5
				WHERE id = $1 AND state_generation < $3 AND time_deleted IS NULL`,
				w.ID.String(), string(w.Runtime.State), int64(w.Runtime.Generation), ts(w.Runtime.TimeUpdated),
				stringOrNil(w.Runtime.FailureReason))
			if err != nil {
				return err
			}
			n, err := r.RowsAffected()
			if err != nil {
				return err
			}
			res.VMMWritten[i] = n == 1
		}
		for attempt := 0; attempt < 8; attempt++ {
			s, err := snapshot(ctx, tx, id)
			if err != nil {
				return err
			}
			res.After = s
			next, changed := compute(s)
			if !changed {
				res.Outcome = SettleUnchanged
				return nil
			}
			if u := s.Instance.UpdaterID; u != nil && *u != holder {
				res.Outcome = SettleLockHeld
				return nil
			}
			r, err := tx.ExecContext(ctx, `
				UPDATE instance SET state = $2, active_propolis_id = $3, target_propolis_id = $4, migration_id = $5,
					state_generation = $6, time_state_updated = $7
				WHERE id = $1 AND state_generation < $6 AND time_deleted IS NULL
					AND (updater_id IS NULL OR updater_id = $8)`,
				id.String(), string(next.State), idOrNil(next.ActiveVMM), idOrNil(next.TargetVMM), idOrNil(next.MigrationID),
				int64(next.Generation), ts(next.TimeUpdated), holder.String())
			if err != nil {
				return err
			}
			if n, err := r.RowsAffected(); err != nil || n == 1 {
				res.Outcome = SettleWritten
				res.After = s.Relinked(next)
				return err
			}
		}
		return fmt.Errorf("instance %s kept changing while it was settled", id)
	})
	return res, err
}

// InstanceSettleFrom is InstanceSettle for a caller that read the instance
// as from and has since learnt writes about its VMMs. In the common case
// (PostgreSQL; from runs one VMM, the one written, with no migration and no
// update holding the instance) the write and the settle computed from from
// are one statement, shared by the settles made at the same time (see
// gatherer): the instance is only rewritten if its generation is still
// from's and the VMM write got in. Anything else, or a guard that misses,
// is settled by InstanceSettle's transaction, which reads afresh.
func (d *DataStore) InstanceSettleFrom(ctx context.Context, from model.InstanceSnapshot, writes []model.VMMWrite,
	compute func(model.InstanceSnapshot) (model.InstanceRuntime, bool)) (SettleResult, error) {
	id := from.Instance.ID
	if d.settles == nil || from.Migration != nil || from.Target != nil || from.Instance.UpdaterID != nil ||
		from.Active == nil || len(writes) != 1 || writes[0].ID != from.Active.ID ||
		writes[0].Runtime.Generation <= from.Active.Runtime.Generation {
		return d.InstanceSettle(ctx, id, uuid.Nil, writes, compute)
	}
	w := writes[0]
	expected := from
	active := *from.Active
	active.Runtime = w.Runtime
	expected.Active = &active
	next, changed := compute(expected)
	if !changed {
		return d.InstanceSettle(ctx, id, uuid.Nil, writes, compute)
	}
	written, err := d.settles.do(ctx, settleWrite{vmm: w, instance: id, next: next, from: from.Instance.Runtime.Generation})
	switch {
	case err != nil:
		return SettleResult{}, err
	case written.instance:
		return SettleResult{Outcome: SettleWritten, After: expected.Relinked(next), VMMWritten: []bool{true}}, nil
	case !written.vmm:
		// The VMM moved on since from: nothing was written.
		return d.InstanceSettle(ctx, id, uuid.Nil, writes, compute)
	}
	// The VMM write is in; the instance changed since from. Settle it from
	// what it is now.
	res, err := d.InstanceSettle(ctx, id, uuid.Nil, nil, compute)
	res.VMMWritten = []bool{true}
	return res, err
}

// settleWrite is one InstanceSettleFrom waiting to share a statement: a
// guarded VMM write, and the instance runtime it settles to if the
// instance is still at generation from.
type settleWrite struct {
	vmm      model.VMMWrite
	instance uuid.UUID
	next     model.InstanceRuntime
	from     uint64
}

// settleWritten says which of a settleWrite's two writes got in.
type settleWritten struct{ vmm, instance bool }

// settlesStatement makes two or more settles as one statement, whose
// data-modifying CTEs write each VMM through its guard, then each instance
// whose VMM write got in and whose generation is still the one read. It
// waits for no row lock (see gatherer): a VMM or instance whose row
// another transaction holds is skipped, and InstanceSettleFrom settles it
// afresh, as it does one whose guard missed.
func (d *DataStore) settlesStatement(ctx context.Context, settles []settleWrite) ([]settleWritten, error) {
	var (
		nth                                        []int32
		vmmIDs, vmmStates, vmmTimes                []string
		vmmReasons, actives, targets, migrationIDs []*string
		instanceIDs, states, times                 []string
		vmmGens, gens, fromGens                    []int64
	)
	for i, r := range settles {
		nth = append(nth, int32(i))
		vmmIDs = append(vmmIDs, r.vmm.ID.String())
		vmmStates = append(vmmStates, string(r.vmm.Runtime.State))
		vmmGens = append(vmmGens, int64(r.vmm.Runtime.Generation))
		vmmTimes = append(vmmTimes, ts(r.vmm.Runtime.TimeUpdated))
		vmmReasons = append(vmmReasons, stringPtrOrNil(r.vmm.Runtime.FailureReason))
		instanceIDs = append(instanceIDs, r.instance.String())
		states = append(states, string(r.next.State))
		actives = append(actives, idPtr(r.next.ActiveVMM))
		targets = append(targets, idPtr(r.next.TargetVMM))
		migrationIDs = append(migrationIDs, idPtr(r.next.MigrationID))
		gens = append(gens, int64(r.next.Generation))
		times = append(times, ts(r.next.TimeUpdated))
		fromGens = append(fromGens, int64(r.from))
	}
	rows, err := d.db.QueryContext(ctx, `
		WITH w AS (
			SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
				$7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::text[], $14::bigint[])
				AS w(nth, vmm_id, vmm_state, vmm_gen, vmm_time, vmm_reason,
					instance_id, state, active, target, migration, gen, at, from_gen)
		), free_vmm AS (
			SELECT vmm.id FROM vmm JOIN w ON vmm.id = w.vmm_id
			WHERE vmm.state_generation < w.vmm_gen AND vmm.time_deleted IS NULL
			FOR NO KEY UPDATE OF vmm SKIP LOCKED
		), v AS (
			UPDATE vmm SET state = w.vmm_state, state_generation = w.vmm_gen,
				time_state_updated = w.vmm_time::timestamptz, failure_reason = w.vmm_reason
			FROM w
			WHERE vmm.id = w.vmm_id AND vmm.id IN (SELECT id FROM free_vmm)
			RETURNING w.nth
		), free_instance AS (
			SELECT instance.id FROM instance JOIN w ON instance.id = w.instance_id
			WHERE instance.state_generation = w.from_gen AND instance.time_deleted IS NULL
				AND instance.updater_id IS NULL
			FOR NO KEY UPDATE OF instance SKIP LOCKED
		), i AS (
			UPDATE instance SET state = w.state, active_propolis_id = w.active, target_propolis_id = w.target,
				migration_id = w.migration, state_generation = w.gen, time_state_updated = w.at::timestamptz
			FROM w
			WHERE instance.id = w.instance_id AND instance.id IN (SELECT id FROM free_instance)
				AND w.nth IN (SELECT nth FROM v)
			RETURNING w.nth
		)
		SELECT w.nth, w.nth IN (SELECT nth FROM v), w.nth IN (SELECT nth FROM i) FROM w`,
		nth, vmmIDs, vmmStates, vmmGens, vmmTimes, vmmReasons,
		instanceIDs, states, actives, targets, migrationIDs, gens, times, fromGens)
	if err != nil {
		return nil, d.classify(err)
	}
	defer rows.Close()
	written := make([]settleWritten, len(settles))
	for rows.Next() {
		var (
			i int32
			w settleWritten
		)
		if err := rows.Scan(&i, &w.vmm, &w.instance); err != nil {
			return nil, d.classify(err)
		}
		written[i] = w
	}
	return written, d.classify(rows.Err())
}

// settleAlone makes one settle: the same statement for one VMM and one
// instance.
func (d *DataStore) settleAlone(ctx context.Context, w settleWrite) (settleWritten, error) {
	var written settleWritten
	err := d.db.QueryRowContext(ctx, `
		WITH v AS (
			UPDATE vmm SET state = $2, state_generation = $3, time_state_updated = $4, failure_reason = $5
			WHERE id = $1 AND state_generation < $3 AND time_deleted IS NULL
			RETURNING 1
		), i AS (
			UPDATE instance SET state = $7, active_propolis_id = $8, target_propolis_id = $9, migration_id = $10,
				state_generation = $11, time_state_updated = $12
			WHERE id = $6 AND state_generation = $13 AND time_deleted IS NULL AND updater_id IS NULL
				AND EXISTS (SELECT 1 FROM v)
			RETURNING 1
		)
		SELECT EXISTS (SELECT 1 FROM v), EXISTS (SELECT 1 FROM i)`,
		w.vmm.ID.String(), string(w.vmm.Runtime.State), int64(w.vmm.Runtime.Generation), ts(w.vmm.Runtime.TimeUpdated),
		stringOrNil(w.vmm.Runtime.FailureReason),
		w.instance.String(), string(w.next.State), idOrNil(w.next.ActiveVMM), idOrNil(w.next.TargetVMM), idOrNil(w.next.MigrationID),
		int64(w.next.Generation), ts(w.next.TimeUpdated), int64(w.from),
	).Scan(&written.vmm, &written.instance)
	return written, d.classify(err)
}
