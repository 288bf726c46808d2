package datastore

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

func idOrNil(id *uuid.UUID) any {
	if id == nil {
		return nil
	}
	return id.String()
}

func parseOptionalID(s *string) *uuid.UUID {
	if s == nil {
		return nil
	}
	id := uuid.MustParse(*s)
	return &id
}

// InstanceCreate inserts an instance; ErrAlreadyExists when its name is
// taken in the project, ErrNotFound when the project is not live.
func (d *DataStore) InstanceCreate(ctx context.Context, i Instance) error {
	res, err := d.db.ExecContext(ctx, `
		INSERT INTO instance (id, project_id, name, description, hostname, ncpus, memory_bytes,
			state, active_propolis_id, target_propolis_id, migration_id, state_generation, time_state_updated,
			intended_state, auto_restart_policy, time_created, time_modified)
		SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16
		WHERE EXISTS (SELECT 1 FROM project WHERE id = $2 AND time_deleted IS NULL)`,
		i.ID.String(), i.ProjectID.String(), i.Name, i.Description, i.Hostname, i.NCPUs, i.MemoryBytes,
		string(i.Runtime.State), idOrNil(i.Runtime.ActiveVMM), idOrNil(i.Runtime.TargetVMM), idOrNil(i.Runtime.MigrationID),
		int64(i.Runtime.Generation), ts(i.Runtime.TimeUpdated),
		string(i.IntendedState), string(i.AutoRestartPolicy), ts(i.TimeCreated))
	if err != nil {
		return d.classify(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: project %s", ErrNotFound, i.ProjectID)
	}
	return nil
}

const instanceColumns = `id, project_id, name, description, hostname, ncpus, memory_bytes, state,
	active_propolis_id, target_propolis_id, migration_id, state_generation, time_state_updated,
	intended_state, auto_restart_policy, time_last_auto_restarted, updater_id, updater_gen,
	time_created, time_modified`

func scanInstance(row interface{ Scan(...any) error }) (Instance, error) {
	var (
		i                                     Instance
		id, project, state, intended, policy  string
		active, target, migration, updater    *string
		gen, updaterGen                       int64
		updated, restarted, created, modified dbTime
	)
	if err := row.Scan(&id, &project, &i.Name, &i.Description, &i.Hostname, &i.NCPUs, &i.MemoryBytes, &state,
		&active, &target, &migration, &gen, &updated, &intended, &policy, &restarted, &updater, &updaterGen,
		&created, &modified); err != nil {
		return Instance{}, err
	}
	i.ID, i.ProjectID = uuid.MustParse(id), uuid.MustParse(project)
	i.Runtime = InstanceRuntime{State: InstanceState(state), ActiveVMM: parseOptionalID(active),
		TargetVMM: parseOptionalID(target), MigrationID: parseOptionalID(migration),
		Generation: uint64(gen), TimeUpdated: updated.Time}
	i.IntendedState, i.AutoRestartPolicy = IntendedState(intended), AutoRestartPolicy(policy)
	i.TimeLastAutoRestarted, i.UpdaterID, i.UpdaterGen = restarted.ptr(), parseOptionalID(updater), uint64(updaterGen)
	i.TimeCreated, i.TimeModified = created.Time, modified.Time
	return i, nil
}

// InstanceGet returns a live instance.
func (d *DataStore) InstanceGet(ctx context.Context, id uuid.UUID) (Instance, error) {
	i, err := scanInstance(d.db.QueryRowContext(ctx,
		`SELECT `+instanceColumns+` FROM instance WHERE id = $1 AND time_deleted IS NULL`, id.String()))
	if isNoRows(err) {
		return Instance{}, fmt.Errorf("%w: instance %s", ErrNotFound, id)
	}
	return i, d.classify(err)
}

// InstanceUpdateRuntime writes rt if, and only if, rt.Generation is newer
// than the stored one (N3): (true, nil) when written, (false, nil) when the
// instance exists but its generation did not advance, ErrNotFound when there
// is no live instance. One statement on the written path.
func (d *DataStore) InstanceUpdateRuntime(ctx context.Context, id uuid.UUID, rt InstanceRuntime) (bool, error) {
	res, err := d.db.ExecContext(ctx, `
		UPDATE instance SET state = $2, active_propolis_id = $3, target_propolis_id = $4, migration_id = $5,
			state_generation = $6, time_state_updated = $7
		WHERE id = $1 AND state_generation < $6 AND time_deleted IS NULL`,
		id.String(), string(rt.State), idOrNil(rt.ActiveVMM), idOrNil(rt.TargetVMM), idOrNil(rt.MigrationID),
		int64(rt.Generation), ts(rt.TimeUpdated))
	if err != nil {
		return false, d.classify(err)
	}
	return d.guardOutcome(ctx, res, "instance", id)
}

type rowsAffected interface{ RowsAffected() (int64, error) }

// guardOutcome tells "not written" from "not found" after a guarded UPDATE
// touched no row.
func (d *DataStore) guardOutcome(ctx context.Context, res rowsAffected, table string, id uuid.UUID) (bool, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	if n == 1 {
		return true, nil
	}
	var exists int
	if err := d.db.QueryRowContext(ctx,
		`SELECT count(*) FROM `+table+` WHERE id = $1 AND time_deleted IS NULL`, id.String()).Scan(&exists); err != nil {
		return false, d.classify(err)
	}
	if exists == 0 {
		return false, fmt.Errorf("%w: %s %s", ErrNotFound, table, id)
	}
	return false, nil
}
