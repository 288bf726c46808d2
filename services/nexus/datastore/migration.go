package datastore

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// MigrationInsert records a new migration, both sides pending. Idempotent
// for a saga node re-run after a crash: an existing row with the same id is
// left as it is.
func (d *DataStore) MigrationInsert(ctx context.Context, m model.Migration) error {
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

func scanMigration(row rowScanner) (model.Migration, error) {
	var (
		m                            model.Migration
		id, instance, source, target string
		sourceState, targetState     string
		sourceGen, targetGen         int64
		created                      dbTime
	)
	if err := row.Scan(&id, &instance, &source, &target, &sourceState, &sourceGen, &targetState, &targetGen, &created); err != nil {
		return model.Migration{}, err
	}
	m.ID, m.InstanceID = uuid.MustParse(id), uuid.MustParse(instance)
	m.SourceVMM, m.TargetVMM = uuid.MustParse(source), uuid.MustParse(target)
	m.SourceState, m.SourceGen = model.MigrationState(sourceState), uint64(sourceGen)
	m.TargetState, m.TargetGen = model.MigrationState(targetState), uint64(targetGen)
	m.TimeCreated = created.Time
	return m, nil
}

// migrationGet reads a migration, for a snapshot.
func migrationGet(ctx context.Context, q queryer, id uuid.UUID) (model.Migration, error) {
	m, err := scanMigration(q.QueryRowContext(ctx,
		`SELECT `+migrationColumns+` FROM migration WHERE id = $1 AND time_deleted IS NULL`, id.String()))
	if isNoRows(err) {
		return model.Migration{}, fmt.Errorf("%w: migration %s", model.ErrNotFound, id)
	}
	return m, err
}

// MigrationUpdateSide writes one side's progress as its sled-agent
// numbered it, through that side's generation guard (N3): (true, nil) when
// written, (false, nil) when the generation did not advance, model.ErrNotFound
// when there is no such migration.
//
// The side is written only by the VMM that is that side (S3), in the same
// statement: another VMM's report is model.ErrNotPlacedHere.
func (d *DataStore) MigrationUpdateSide(ctx context.Context, vmm, id uuid.UUID, side model.MigrationSide, state model.MigrationState, gen uint64, at time.Time) (bool, error) {
	var query, owner string
	switch side {
	case model.MigrationSource:
		query = `UPDATE migration SET source_state = $2, source_gen = $3, time_source_updated = $4
			WHERE id = $1 AND source_propolis_id = $5 AND source_gen < $3 AND time_deleted IS NULL`
		owner = `SELECT source_propolis_id FROM migration WHERE id = $1 AND time_deleted IS NULL`
	case model.MigrationTarget:
		query = `UPDATE migration SET target_state = $2, target_gen = $3, time_target_updated = $4
			WHERE id = $1 AND target_propolis_id = $5 AND target_gen < $3 AND time_deleted IS NULL`
		owner = `SELECT target_propolis_id FROM migration WHERE id = $1 AND time_deleted IS NULL`
	default:
		return false, fmt.Errorf("unknown migration side %q", side)
	}
	res, err := d.db.ExecContext(ctx, query, id.String(), string(state), int64(gen), ts(at), vmm.String())
	if err != nil {
		return false, d.classify(err)
	}
	return d.reportOutcome(ctx, res, owner, "migration", id, vmm)
}
