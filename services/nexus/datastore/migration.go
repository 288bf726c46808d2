package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// MigrationInsert records a new migration, both sides pending. Idempotent
// for a saga node re-run after a crash: an existing row with the same id is
// left as it is.
func (d *DataStore) MigrationInsert(ctx context.Context, m Migration) error {
	_, err := d.db.ExecContext(ctx, `
		INSERT INTO migration (id, instance_id, source_propolis_id, target_propolis_id,
			source_state, source_gen, target_state, target_gen, time_created)
		VALUES ($1, $2, $3, $4, 'pending', 1, 'pending', 1, $5)
		ON CONFLICT (id) DO NOTHING`,
		m.ID.String(), m.InstanceID.String(), m.SourceVMM.String(), m.TargetVMM.String(), ts(m.TimeCreated))
	return d.classify(err)
}

const migrationColumns = `id, instance_id, source_propolis_id, target_propolis_id, source_state, source_gen,
	target_state, target_gen, time_created`

func scanMigration(row interface{ Scan(...any) error }) (Migration, error) {
	var (
		m                            Migration
		id, instance, source, target string
		sourceState, targetState     string
		sourceGen, targetGen         int64
		created                      dbTime
	)
	if err := row.Scan(&id, &instance, &source, &target, &sourceState, &sourceGen, &targetState, &targetGen, &created); err != nil {
		return Migration{}, err
	}
	m.ID, m.InstanceID = uuid.MustParse(id), uuid.MustParse(instance)
	m.SourceVMM, m.TargetVMM = uuid.MustParse(source), uuid.MustParse(target)
	m.SourceState, m.SourceGen = MigrationState(sourceState), uint64(sourceGen)
	m.TargetState, m.TargetGen = MigrationState(targetState), uint64(targetGen)
	m.TimeCreated = created.Time
	return m, nil
}

// migrationGet reads a migration, for a snapshot.
func migrationGet(ctx context.Context, q queryer, id uuid.UUID) (Migration, error) {
	m, err := scanMigration(q.QueryRowContext(ctx,
		`SELECT `+migrationColumns+` FROM migration WHERE id = $1 AND time_deleted IS NULL`, id.String()))
	if isNoRows(err) {
		return Migration{}, fmt.Errorf("%w: migration %s", ErrNotFound, id)
	}
	return m, err
}

// MigrationUpdateSide writes one side's progress as its sled-agent
// numbered it, through that side's generation guard (N3): (true, nil) when
// written, (false, nil) when the generation did not advance, ErrNotFound
// when there is no such migration.
func (d *DataStore) MigrationUpdateSide(ctx context.Context, id uuid.UUID, side MigrationSide, state MigrationState, gen uint64, at time.Time) (bool, error) {
	var query string
	switch side {
	case MigrationSource:
		query = `UPDATE migration SET source_state = $2, source_gen = $3, time_source_updated = $4
			WHERE id = $1 AND source_gen < $3 AND time_deleted IS NULL`
	case MigrationTarget:
		query = `UPDATE migration SET target_state = $2, target_gen = $3, time_target_updated = $4
			WHERE id = $1 AND target_gen < $3 AND time_deleted IS NULL`
	default:
		return false, fmt.Errorf("unknown migration side %q", side)
	}
	res, err := d.db.ExecContext(ctx, query, id.String(), string(state), int64(gen), ts(at))
	if err != nil {
		return false, d.classify(err)
	}
	return d.guardOutcome(ctx, res, "migration", id)
}

// VMMAllocateOn records a new VMM on the given sled if it has room: a
// migration target, whose sled the operator chose. Idempotent like
// VMMAllocate. ErrNoCapacity when the sled is full, ErrNotFound when it is
// not a live sled seen since liveAfter.
func (d *DataStore) VMMAllocateOn(ctx context.Context, v VMM, ncpus, memory int64, liveAfter time.Time) error {
	return d.inPlacementTx(ctx, func(tx *sql.Tx) error {
		var existing string
		err := tx.QueryRowContext(ctx, `SELECT sled_id FROM vmm WHERE id = $1`, v.ID.String()).Scan(&existing)
		if err == nil {
			return nil
		}
		if !isNoRows(err) {
			return err
		}
		var live, fits bool
		err = tx.QueryRowContext(ctx, `
			SELECT s.time_last_seen > $2,
				s.ncpus >= $3 + COALESCE((SELECT sum(i.ncpus) FROM vmm m JOIN instance i ON i.id = m.instance_id
					WHERE m.sled_id = s.id AND m.time_deleted IS NULL
						AND m.state NOT IN ('destroyed', 'failed', 'saga_unwound')), 0)
				AND s.memory_bytes >= $4 + COALESCE((SELECT sum(i.memory_bytes) FROM vmm m JOIN instance i ON i.id = m.instance_id
					WHERE m.sled_id = s.id AND m.time_deleted IS NULL
						AND m.state NOT IN ('destroyed', 'failed', 'saga_unwound')), 0)
			FROM sled s WHERE s.id = $1 AND s.time_deleted IS NULL`,
			v.SledID.String(), ts(liveAfter), ncpus, memory).Scan(&live, &fits)
		switch {
		case isNoRows(err) || (err == nil && !live):
			return fmt.Errorf("%w: sled %s is not a live sled", ErrNotFound, v.SledID)
		case err != nil:
			return err
		case !fits:
			return fmt.Errorf("%w: sled %s does not have %d CPUs and %d bytes free", ErrNoCapacity, v.SledID, ncpus, memory)
		}
		_, err = tx.ExecContext(ctx, `
			INSERT INTO vmm (id, instance_id, sled_id, state, state_generation, time_state_updated, time_created)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			v.ID.String(), v.InstanceID.String(), v.SledID.String(), string(v.Runtime.State), int64(v.Runtime.Generation),
			ts(v.Runtime.TimeUpdated), ts(v.TimeCreated))
		return err
	})
}
