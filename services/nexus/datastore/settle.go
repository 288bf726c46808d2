package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
)

// queryer is what reads and writes need, in or out of a transaction.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// InstanceSnapshot reads an instance with the VMMs and migration its
// runtime points at.
func (d *DataStore) InstanceSnapshot(ctx context.Context, id uuid.UUID) (InstanceSnapshot, error) {
	s, err := snapshot(ctx, d.db, id)
	return s, d.classify(err)
}

func snapshot(ctx context.Context, q queryer, id uuid.UUID) (InstanceSnapshot, error) {
	inst, err := scanInstance(q.QueryRowContext(ctx,
		`SELECT `+instanceColumns+` FROM instance WHERE id = $1 AND time_deleted IS NULL`, id.String()))
	if isNoRows(err) {
		return InstanceSnapshot{}, fmt.Errorf("%w: instance %s", ErrNotFound, id)
	}
	if err != nil {
		return InstanceSnapshot{}, err
	}
	return linked(ctx, q, inst)
}

// linked reads the VMMs and migration inst's runtime points at.
func linked(ctx context.Context, q queryer, inst Instance) (InstanceSnapshot, error) {
	s := InstanceSnapshot{Instance: inst}
	rt := inst.Runtime
	if rt.ActiveVMM != nil || rt.TargetVMM != nil {
		rows, err := q.QueryContext(ctx, `SELECT `+vmmColumns+` FROM vmm WHERE id IN ($1, $2)`,
			idOrNil(rt.ActiveVMM), idOrNil(rt.TargetVMM))
		if err != nil {
			return s, err
		}
		defer rows.Close()
		for rows.Next() {
			v, err := scanVMM(rows)
			if err != nil {
				return s, err
			}
			s.attach(v)
		}
		if err := rows.Err(); err != nil {
			return s, err
		}
	}
	return s, s.readMigration(ctx, q)
}

// attach links v where the instance's runtime points at it.
func (s *InstanceSnapshot) attach(v VMM) {
	switch rt := s.Instance.Runtime; {
	case rt.ActiveVMM != nil && v.ID == *rt.ActiveVMM:
		s.Active = &v
	case rt.TargetVMM != nil && v.ID == *rt.TargetVMM:
		s.Target = &v
	}
}

// readMigration reads the migration the instance's runtime points at, if
// any.
func (s *InstanceSnapshot) readMigration(ctx context.Context, q queryer) error {
	id := s.Instance.Runtime.MigrationID
	if id == nil {
		return nil
	}
	m, err := migrationGet(ctx, q, *id)
	if err != nil {
		return err
	}
	s.Migration = &m
	return nil
}

// VMMWrite is a guarded VMM runtime write (N3) made together with a settle.
type VMMWrite struct {
	ID      uuid.UUID
	Runtime VMMRuntime
}

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
	After InstanceSnapshot
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
func (d *DataStore) InstanceSettle(ctx context.Context, id, holder uuid.UUID, writes []VMMWrite,
	compute func(InstanceSnapshot) (InstanceRuntime, bool)) (SettleResult, error) {
	var res SettleResult
	// Rows are locked in id order, so two settles of one instance writing
	// the same VMMs cannot deadlock.
	order := make([]int, len(writes))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(writes[a].ID.String(), writes[b].ID.String()) })
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
				res.After = s.relinked(next)
				return err
			}
		}
		return fmt.Errorf("instance %s kept changing while it was settled", id)
	})
	return res, err
}

// relinked is the snapshot after its instance's runtime became next: the
// same VMMs, linked as next says.
func (s InstanceSnapshot) relinked(next InstanceRuntime) InstanceSnapshot {
	out := InstanceSnapshot{Instance: s.Instance}
	out.Instance.Runtime = next
	for _, v := range []*VMM{s.Active, s.Target} {
		switch {
		case v == nil:
		case next.ActiveVMM != nil && v.ID == *next.ActiveVMM:
			out.Active = v
		case next.TargetVMM != nil && v.ID == *next.TargetVMM:
			out.Target = v
		}
	}
	if next.MigrationID != nil && s.Migration != nil && *next.MigrationID == s.Migration.ID {
		out.Migration = s.Migration
	}
	return out
}

// InstanceSettleFrom is InstanceSettle for a caller that read the instance
// as from and has since learnt writes about its VMMs. In the common case
// (PostgreSQL; from runs one VMM, the one written, with no migration and no
// update holding the instance) the write and the settle computed from from
// are one statement, one round trip instead of six: the instance is only
// rewritten if its generation is still from's and the VMM write got in.
// Anything else, or a guard that misses, is settled by InstanceSettle's
// transaction, which reads afresh.
func (d *DataStore) InstanceSettleFrom(ctx context.Context, from InstanceSnapshot, writes []VMMWrite,
	compute func(InstanceSnapshot) (InstanceRuntime, bool)) (SettleResult, error) {
	id := from.Instance.ID
	if d.backend != Postgres || from.Migration != nil || from.Target != nil || from.Instance.UpdaterID != nil ||
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
	var vmmWritten, instanceWritten bool
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
		w.ID.String(), string(w.Runtime.State), int64(w.Runtime.Generation), ts(w.Runtime.TimeUpdated),
		stringOrNil(w.Runtime.FailureReason),
		id.String(), string(next.State), idOrNil(next.ActiveVMM), idOrNil(next.TargetVMM), idOrNil(next.MigrationID),
		int64(next.Generation), ts(next.TimeUpdated), int64(from.Instance.Runtime.Generation),
	).Scan(&vmmWritten, &instanceWritten)
	switch {
	case err != nil:
		return SettleResult{}, d.classify(err)
	case instanceWritten:
		return SettleResult{Outcome: SettleWritten, After: expected.relinked(next), VMMWritten: []bool{true}}, nil
	case !vmmWritten:
		// The VMM moved on since from: nothing was written.
		return d.InstanceSettle(ctx, id, uuid.Nil, writes, compute)
	}
	// The VMM write is in; the instance changed since from. Settle it from
	// what it is now.
	res, err := d.InstanceSettle(ctx, id, uuid.Nil, nil, compute)
	res.VMMWritten = []bool{true}
	return res, err
}
