package datastore

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// InstanceCreate inserts an instance; model.ErrAlreadyExists when its name is
// taken in the project, model.ErrNotFound when the project is not live.
func (d *DataStore) InstanceCreate(ctx context.Context, i model.Instance) error {
	res, err := d.db.ExecContext(ctx, `
		INSERT INTO instance (id, project_id, name, description, hostname, ncpus, memory_bytes,
			state, active_propolis_id, target_propolis_id, migration_id, state_generation, time_state_updated,
			intended_state, auto_restart_policy, time_created, time_modified)
		SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16
		WHERE EXISTS (SELECT 1 FROM project WHERE id = $2 AND time_deleted IS NULL`+d.projectLock(" FOR SHARE")+`)`,
		i.ID.String(), i.ProjectID.String(), i.Name, i.Description, i.Hostname, i.NCPUs, i.MemoryBytes,
		string(i.Runtime.State), idOrNil(i.Runtime.ActiveVMM), idOrNil(i.Runtime.TargetVMM), idOrNil(i.Runtime.MigrationID),
		int64(i.Runtime.Generation), ts(i.Runtime.TimeUpdated),
		string(i.IntendedState), string(i.AutoRestartPolicy), ts(i.TimeCreated))
	if err != nil {
		return d.classify(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: project %s", model.ErrNotFound, i.ProjectID)
	}
	return nil
}

const instanceColumns = `id, project_id, name, description, hostname, ncpus, memory_bytes, state,
	active_propolis_id, target_propolis_id, migration_id, state_generation, time_state_updated,
	intended_state, auto_restart_policy, time_last_auto_restarted, updater_id, updater_gen,
	time_created, time_modified`

func scanInstance(row rowScanner) (model.Instance, error) {
	var (
		i                                     model.Instance
		id, project, state, intended, policy  string
		active, target, migration, updater    *string
		gen, updaterGen                       int64
		updated, restarted, created, modified dbTime
	)
	if err := row.Scan(&id, &project, &i.Name, &i.Description, &i.Hostname, &i.NCPUs, &i.MemoryBytes, &state,
		&active, &target, &migration, &gen, &updated, &intended, &policy, &restarted, &updater, &updaterGen,
		&created, &modified); err != nil {
		return model.Instance{}, err
	}
	i.ID, i.ProjectID = uuid.MustParse(id), uuid.MustParse(project)
	i.Runtime = model.InstanceRuntime{State: model.InstanceState(state), ActiveVMM: parseOptionalID(active),
		TargetVMM: parseOptionalID(target), MigrationID: parseOptionalID(migration),
		Generation: uint64(gen), TimeUpdated: updated.Time}
	i.IntendedState, i.AutoRestartPolicy = model.IntendedState(intended), model.AutoRestartPolicy(policy)
	i.TimeLastAutoRestarted, i.UpdaterID, i.UpdaterGen = restarted.ptr(), parseOptionalID(updater), uint64(updaterGen)
	i.TimeCreated, i.TimeModified = created.Time, modified.Time
	return i, nil
}

// InstanceGet returns a live instance.
func (d *DataStore) InstanceGet(ctx context.Context, id uuid.UUID) (model.Instance, error) {
	i, err := scanInstance(d.db.QueryRowContext(ctx,
		`SELECT `+instanceColumns+` FROM instance WHERE id = $1 AND time_deleted IS NULL`, id.String()))
	if isNoRows(err) {
		return model.Instance{}, fmt.Errorf("%w: instance %s", model.ErrNotFound, id)
	}
	return i, d.classify(err)
}

// InstanceUpdateRuntime writes rt if, and only if, rt.Generation is newer
// than the stored one (N3): (true, nil) when written, (false, nil) when the
// instance exists but its generation did not advance, model.ErrNotFound when there
// is no live instance. One statement on the written path.
func (d *DataStore) InstanceUpdateRuntime(ctx context.Context, id uuid.UUID, rt model.InstanceRuntime) (bool, error) {
	return d.instanceUpdateRuntime(ctx, id, rt, "")
}

// instanceUpdateRuntime is the guarded runtime write, with also a condition
// on the row when where is not empty.
func (d *DataStore) instanceUpdateRuntime(ctx context.Context, id uuid.UUID, rt model.InstanceRuntime, where string) (bool, error) {
	if where != "" {
		where = " AND " + where
	}
	res, err := d.db.ExecContext(ctx, `
		UPDATE instance SET state = $2, active_propolis_id = $3, target_propolis_id = $4, migration_id = $5,
			state_generation = $6, time_state_updated = $7
		WHERE id = $1 AND state_generation < $6 AND time_deleted IS NULL`+where,
		id.String(), string(rt.State), idOrNil(rt.ActiveVMM), idOrNil(rt.TargetVMM), idOrNil(rt.MigrationID),
		int64(rt.Generation), ts(rt.TimeUpdated))
	if err != nil {
		return false, d.classify(err)
	}
	return d.guardOutcome(ctx, res, "instance", id)
}

// InstanceUpdateRuntimeIfRunningWanted is InstanceUpdateRuntime that also
// writes only while the instance is wanted running (intended_state
// running), in the same statement: for a start linking its VMM and a
// migration pointing the instance at its target. A stop or force-terminate
// that has recorded its wish has answered, or will answer, with the
// instance stopping or stopped; a VMM linked or a migration begun after it
// would show the instance starting or migrating against that answer (F2,
// F9, R1). false when the generation moved or a stop is wanted.
func (d *DataStore) InstanceUpdateRuntimeIfRunningWanted(ctx context.Context, id uuid.UUID, rt model.InstanceRuntime) (bool, error) {
	return d.instanceUpdateRuntime(ctx, id, rt, "intended_state = '"+string(model.IntendRunning)+"'")
}

// InstanceLookup returns a live instance by project and name.
func (d *DataStore) InstanceLookup(ctx context.Context, project uuid.UUID, name string) (model.Instance, error) {
	i, err := scanInstance(d.db.QueryRowContext(ctx, `SELECT `+instanceColumns+` FROM instance
		WHERE project_id = $1 AND name = $2 AND time_deleted IS NULL`, project.String(), name))
	if isNoRows(err) {
		return model.Instance{}, fmt.Errorf("%w: instance %q", model.ErrNotFound, name)
	}
	return i, d.classify(err)
}

// InstanceList returns up to limit live instances of a project in order,
// after the given name or id.
func (d *DataStore) InstanceList(ctx context.Context, project uuid.UUID, order ListOrder, after string, limit int) ([]model.Instance, error) {
	where, orderBy := order.keyset(2)
	return list(ctx, d, scanInstance, `SELECT `+instanceColumns+` FROM instance
		WHERE project_id = $1 AND time_deleted IS NULL AND `+where+` ORDER BY `+orderBy+` LIMIT $3`,
		project.String(), after, limit)
}

// SledInstance is an instance with a VMM on a sled, and its project's
// name.
type SledInstance struct {
	Instance    model.Instance
	ProjectName string
}

// SledInstanceList returns up to limit live instances whose active or
// target VMM is on sled, in id order after the given id.
func (d *DataStore) SledInstanceList(ctx context.Context, sled uuid.UUID, after string, limit int) ([]SledInstance, error) {
	return list(ctx, d, func(row rowScanner) (SledInstance, error) {
		var (
			si  SledInstance
			err error
		)
		si.Instance, err = scanInstance(scanFunc(func(dest ...any) error { return row.Scan(append(dest, &si.ProjectName)...) }))
		return si, err
	}, `SELECT `+qualified("i", instanceColumns)+`, p.name FROM instance i
		JOIN vmm v ON v.id = i.active_propolis_id OR v.id = i.target_propolis_id
		JOIN project p ON p.id = i.project_id
		WHERE v.sled_id = $1 AND i.time_deleted IS NULL AND i.id > $2 ORDER BY i.id LIMIT $3`,
		sled.String(), after, limit)
}

// InstanceSetIntendedState records what the user last asked for (running,
// stopped …). It is the user's wish, not runtime state, so it is not
// generation-guarded: the latest request wins.
func (d *DataStore) InstanceSetIntendedState(ctx context.Context, id uuid.UUID, intended model.IntendedState, at time.Time) error {
	res, err := d.db.ExecContext(ctx, `UPDATE instance SET intended_state = $2, time_modified = $3
		WHERE id = $1 AND time_deleted IS NULL`, id.String(), string(intended), ts(at))
	if err != nil {
		return d.classify(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: instance %s", model.ErrNotFound, id)
	}
	return nil
}

// InstanceReconfigure gives a stopped instance a new shape, through the
// generation guard (N3): it writes only if the instance is still at
// generation gen, stopped (no VMM) and held by no update, and bumps the
// generation, so that a start that read the old shape fails its own
// guarded write. false when anything changed since.
func (d *DataStore) InstanceReconfigure(ctx context.Context, id uuid.UUID, gen uint64, shape model.InstanceShape, at time.Time) (bool, error) {
	res, err := d.db.ExecContext(ctx, `
		UPDATE instance SET ncpus = $2, memory_bytes = $3, auto_restart_policy = $4, state_generation = $5,
			time_modified = $6
		WHERE id = $1 AND state_generation < $5 AND state_generation = $7 AND state = 'no_vmm'
			AND active_propolis_id IS NULL AND updater_id IS NULL AND time_deleted IS NULL`,
		id.String(), shape.NCPUs, shape.MemoryBytes, string(shape.AutoRestartPolicy), int64(gen+1), ts(at), int64(gen))
	if err != nil {
		return false, d.classify(err)
	}
	return d.guardOutcome(ctx, res, "instance", id)
}

// InstanceDelete marks a stopped or failed instance (or one still
// creating, whose create saga unwinds) destroyed and deleted, through the
// generation guard: it writes only if the instance is still at
// generation gen (true), and reports false when anything changed since.
func (d *DataStore) InstanceDelete(ctx context.Context, id uuid.UUID, gen uint64, at time.Time) (bool, error) {
	res, err := d.db.ExecContext(ctx, `
		UPDATE instance SET state = 'destroyed', state_generation = $2, time_state_updated = $3, time_deleted = $3
		WHERE id = $1 AND state_generation < $2 AND state_generation = $4
			AND state IN ('creating', 'no_vmm', 'failed') AND time_deleted IS NULL`,
		id.String(), int64(gen+1), ts(at), int64(gen))
	if err != nil {
		return false, d.classify(err)
	}
	return d.guardOutcome(ctx, res, "instance", id)
}
