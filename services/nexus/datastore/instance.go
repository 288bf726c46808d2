package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

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

// InstanceLookup returns a live instance by project and name.
func (d *DataStore) InstanceLookup(ctx context.Context, project uuid.UUID, name string) (Instance, error) {
	i, err := scanInstance(d.db.QueryRowContext(ctx, `SELECT `+instanceColumns+` FROM instance
		WHERE project_id = $1 AND name = $2 AND time_deleted IS NULL`, project.String(), name))
	if isNoRows(err) {
		return Instance{}, fmt.Errorf("%w: instance %q", ErrNotFound, name)
	}
	return i, d.classify(err)
}

// InstanceList returns up to limit live instances of a project by name,
// after the given name.
func (d *DataStore) InstanceList(ctx context.Context, project uuid.UUID, after string, limit int) ([]Instance, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+instanceColumns+` FROM instance
		WHERE project_id = $1 AND time_deleted IS NULL AND name > $2 ORDER BY name LIMIT $3`,
		project.String(), after, limit)
	if err != nil {
		return nil, d.classify(err)
	}
	defer rows.Close()
	var out []Instance
	for rows.Next() {
		i, err := scanInstance(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	return out, rows.Err()
}

// InstanceSetIntendedState records what the user last asked for (running,
// stopped …). It is the user's wish, not runtime state, so it is not
// generation-guarded: the latest request wins.
func (d *DataStore) InstanceSetIntendedState(ctx context.Context, id uuid.UUID, intended IntendedState, at time.Time) error {
	res, err := d.db.ExecContext(ctx, `UPDATE instance SET intended_state = $2, time_modified = $3
		WHERE id = $1 AND time_deleted IS NULL`, id.String(), string(intended), ts(at))
	if err != nil {
		return d.classify(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: instance %s", ErrNotFound, id)
	}
	return nil
}

// InstanceDelete marks a stopped or failed instance destroyed and deleted,
// through the generation guard: it writes only if the instance is still at
// generation gen (true), and reports false when anything changed since.
func (d *DataStore) InstanceDelete(ctx context.Context, id uuid.UUID, gen uint64, at time.Time) (bool, error) {
	res, err := d.db.ExecContext(ctx, `
		UPDATE instance SET state = 'destroyed', state_generation = $2, time_state_updated = $3, time_deleted = $3
		WHERE id = $1 AND state_generation < $2 AND state_generation = $4
			AND state IN ('no_vmm', 'failed') AND time_deleted IS NULL`,
		id.String(), int64(gen+1), ts(at), int64(gen))
	if err != nil {
		return false, d.classify(err)
	}
	return d.guardOutcome(ctx, res, "instance", id)
}

// InstanceUpdaterLock takes the instance's updater lock for holder (N6):
// true when it now holds it, including when it already did (an idempotent
// saga node re-run after a crash); false when someone else holds it.
func (d *DataStore) InstanceUpdaterLock(ctx context.Context, id, holder uuid.UUID) (bool, error) {
	res, err := d.db.ExecContext(ctx, `UPDATE instance SET updater_id = $2, updater_gen = updater_gen + 1
		WHERE id = $1 AND updater_id IS NULL AND time_deleted IS NULL`, id.String(), holder.String())
	if err != nil {
		return false, d.classify(err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	var current *string
	err = d.db.QueryRowContext(ctx, `SELECT updater_id FROM instance WHERE id = $1 AND time_deleted IS NULL`, id.String()).Scan(&current)
	if isNoRows(err) {
		return false, fmt.Errorf("%w: instance %s", ErrNotFound, id)
	}
	if err != nil {
		return false, d.classify(err)
	}
	return current != nil && *current == holder.String(), nil
}

// InstanceUpdaterUnlock releases the lock if holder holds it; releasing a
// lock one does not hold changes nothing.
func (d *DataStore) InstanceUpdaterUnlock(ctx context.Context, id, holder uuid.UUID) error {
	_, err := d.db.ExecContext(ctx, `UPDATE instance SET updater_id = NULL WHERE id = $1 AND updater_id = $2`,
		id.String(), holder.String())
	return d.classify(err)
}

// InstancesNeedingUpdate returns live instances whose active or target VMM
// is terminal, or whose migration either side finished: the work an update
// saga should have done (N8 updater).
func (d *DataStore) InstancesNeedingUpdate(ctx context.Context) ([]uuid.UUID, error) {
	return d.ids(ctx, `SELECT i.id FROM instance i WHERE i.time_deleted IS NULL AND i.state = 'vmm' AND (
			EXISTS (SELECT 1 FROM vmm v WHERE v.id IN (i.active_propolis_id, i.target_propolis_id)
				AND v.state IN ('destroyed', 'failed', 'saga_unwound'))
			OR EXISTS (SELECT 1 FROM migration m WHERE m.id = i.migration_id
				AND (m.source_state IN ('completed', 'failed') OR m.target_state IN ('completed', 'failed'))))
		ORDER BY i.id`)
}

// InstancesToReincarnate returns failed instances the user wants running,
// whose policy allows an automatic restart and whose cooldown ended before
// cooledSince.
func (d *DataStore) InstancesToReincarnate(ctx context.Context, cooledSince time.Time) ([]uuid.UUID, error) {
	return d.ids(ctx, `SELECT id FROM instance
		WHERE time_deleted IS NULL AND state = 'failed' AND intended_state = 'running'
			AND auto_restart_policy = 'best_effort' AND updater_id IS NULL
			AND (time_last_auto_restarted IS NULL OR time_last_auto_restarted < $1)
		ORDER BY id`, ts(cooledSince))
}

// InstanceClaimAutoRestart records an automatic restart at `at` unless one
// happened since cooledSince; true when this caller claimed it, so two
// nexus replicas never restart the same instance twice in one cooldown.
func (d *DataStore) InstanceClaimAutoRestart(ctx context.Context, id uuid.UUID, at, cooledSince time.Time) (bool, error) {
	res, err := d.db.ExecContext(ctx, `UPDATE instance SET time_last_auto_restarted = $2
		WHERE id = $1 AND time_deleted IS NULL AND state = 'failed'
			AND (time_last_auto_restarted IS NULL OR time_last_auto_restarted < $3)`, id.String(), ts(at), ts(cooledSince))
	if err != nil {
		return false, d.classify(err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (d *DataStore) ids(ctx context.Context, query string, args ...any) ([]uuid.UUID, error) {
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, d.classify(err)
	}
	defer rows.Close()
	var out []uuid.UUID
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, uuid.MustParse(id))
	}
	return out, rows.Err()
}

// ProjectScope is where a caller may act: every project, or these.
type ProjectScope struct {
	All      bool
	Projects []uuid.UUID
}

// InstanceIntendStopped records that the instance must stop (as
// InstanceSetIntendedState does) and returns what it runs now: what
// force-terminate acts on (F2, F3). The wish is only written to an instance
// in scope, checked by the same statement, so authorizing it costs no
// lookup; an instance out of scope is ErrNotFound and nothing is written.
// On PostgreSQL the wish and the instance and VMMs it returns are one
// statement, shared by the wishes made at the same time (see gatherer); on
// SQLite the VMMs are read just after, which is as good, since whatever
// links a VMM later is looked at again by the caller.
func (d *DataStore) InstanceIntendStopped(ctx context.Context, id uuid.UUID, scope ProjectScope, at time.Time) (InstanceSnapshot, error) {
	if !scope.All && len(scope.Projects) == 0 {
		return InstanceSnapshot{}, fmt.Errorf("%w: instance %s", ErrNotFound, id)
	}
	w := stopWish{id: id, scope: scope, at: at}
	var (
		s   *InstanceSnapshot
		err error
	)
	if d.wishes != nil {
		s, err = d.wishes.do(ctx, w)
	} else {
		s, err = d.stopWishAlone(ctx, w)
	}
	if err != nil {
		return InstanceSnapshot{}, err
	}
	if s == nil {
		return InstanceSnapshot{}, fmt.Errorf("%w: instance %s", ErrNotFound, id)
	}
	return *s, nil
}

// stopWishAlone writes one wish: on PostgreSQL, its UPDATE … RETURNING
// joined with the VMMs the instance points at (one row per linked VMM, one
// with NULLs when none is); on SQLite, the UPDATE, then a read of the VMMs.
// It is nil when the wish wrote nothing.
func (d *DataStore) stopWishAlone(ctx context.Context, w stopWish) (*InstanceSnapshot, error) {
	update := `UPDATE instance SET intended_state = 'stopped', time_modified = $2
		WHERE id = $1 AND time_deleted IS NULL`
	args := []any{w.id.String(), ts(w.at)}
	if !w.scope.All {
		marks := make([]string, len(w.scope.Projects))
		for i, p := range w.scope.Projects {
			args = append(args, p.String())
			marks[i] = fmt.Sprintf("$%d", len(args))
		}
		update += ` AND project_id IN (` + strings.Join(marks, ", ") + `)`
	}
	update += ` RETURNING ` + instanceColumns
	if d.backend != Postgres {
		inst, err := scanInstance(d.db.QueryRowContext(ctx, update, args...))
		if isNoRows(err) {
			return nil, nil
		}
		if err != nil {
			return nil, d.classify(err)
		}
		s, err := linked(ctx, d.db, inst)
		return &s, d.classify(err)
	}
	rows, err := d.db.QueryContext(ctx, `WITH i AS (`+update+`)
		SELECT i.*, `+joinedVMMColumns+`
		FROM i LEFT JOIN vmm v ON v.id IN (i.active_propolis_id, i.target_propolis_id)`, args...)
	if err != nil {
		return nil, d.classify(err)
	}
	snaps, err := scanJoinedWishes(rows, 1, false)
	if err != nil {
		return nil, d.classify(err)
	}
	return snaps[0], d.classify(readMigrations(ctx, d.db, snaps))
}

// joinedVMMColumns are a VMM's columns from a LEFT JOIN of vmm v, led by
// whether there is one.
const joinedVMMColumns = `v.id IS NOT NULL, COALESCE(v.id, ''), COALESCE(v.instance_id, ''), COALESCE(v.sled_id, ''),
	COALESCE(v.state, ''), v.failure_reason, COALESCE(v.state_generation, 0), v.time_state_updated, v.time_created`

// scanJoinedWishes reads the rows of wishes' UPDATEs joined with their
// VMMs: the instance (led by its wish's position when numbered), then a
// joined VMM.
func scanJoinedWishes(rows *sql.Rows, wishes int, numbered bool) ([]*InstanceSnapshot, error) {
	defer rows.Close()
	snaps := make([]*InstanceSnapshot, wishes)
	for rows.Next() {
		var (
			nth     int32
			present bool
			vr      vmmRow
		)
		inst, err := scanInstance(scanFunc(func(dest ...any) error {
			if numbered {
				dest = append([]any{&nth}, dest...)
			}
			return rows.Scan(append(append(dest, &present), vr.dest()...)...)
		}))
		if err != nil {
			return nil, err
		}
		if snaps[nth] == nil {
			snaps[nth] = &InstanceSnapshot{Instance: inst}
		}
		if present {
			snaps[nth].attach(vr.vmm())
		}
	}
	return snaps, rows.Err()
}

// readMigrations reads the migration of each snapshot that has one: rare
// for an instance being force-terminated, so not worth a join.
func readMigrations(ctx context.Context, q queryer, snaps []*InstanceSnapshot) error {
	for _, s := range snaps {
		if s != nil {
			if err := s.readMigration(ctx, q); err != nil {
				return err
			}
		}
	}
	return nil
}

// stopWish is one InstanceIntendStopped waiting to share a statement.
type stopWish struct {
	id    uuid.UUID
	scope ProjectScope
	at    time.Time
}

// stopWishesStatement writes the wishes as one statement: an UPDATE …
// RETURNING of every instance in its caller's scope, joined with the VMMs
// each points at. A wish that wrote nothing is answered nil. A lone wish
// takes the single-row statement instead: PostgreSQL plans a statement
// over parameter arrays afresh each time (it cannot tell how long the
// arrays are), which a batch amortizes and a lone call would pay for.
func (d *DataStore) stopWishesStatement(ctx context.Context, wishes []stopWish) ([]*InstanceSnapshot, error) {
	if len(wishes) == 1 {
		s, err := d.stopWishAlone(ctx, wishes[0])
		return []*InstanceSnapshot{s}, err
	}
	var (
		nth, scopeNth          []int32
		ids, ats, scopeProject []string
		everywhere             []bool
	)
	for i, w := range wishes {
		nth = append(nth, int32(i))
		ids = append(ids, w.id.String())
		ats = append(ats, ts(w.at))
		everywhere = append(everywhere, w.scope.All)
		for _, p := range w.scope.Projects {
			scopeNth = append(scopeNth, int32(i))
			scopeProject = append(scopeProject, p.String())
		}
	}
	rows, err := d.db.QueryContext(ctx, `
		WITH w AS (
			SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::bool[]) AS w(nth, id, at, everywhere)
		), i AS (
			UPDATE instance SET intended_state = 'stopped', time_modified = w.at::timestamptz
			FROM w
			WHERE instance.id = w.id AND instance.time_deleted IS NULL
				AND (w.everywhere OR instance.project_id IN (
					SELECT s.project_id FROM unnest($5::int[], $6::text[]) AS s(nth, project_id) WHERE s.nth = w.nth))
			RETURNING w.nth, `+qualified("instance", instanceColumns)+`
		)
		SELECT i.*, `+joinedVMMColumns+`
		FROM i LEFT JOIN vmm v ON v.id IN (i.active_propolis_id, i.target_propolis_id)`,
		nth, ids, ats, everywhere, scopeNth, scopeProject)
	if err != nil {
		return nil, d.classify(err)
	}
	snaps, err := scanJoinedWishes(rows, len(wishes), true)
	if err != nil {
		return nil, d.classify(err)
	}
	return snaps, d.classify(readMigrations(ctx, d.db, snaps))
}

// qualified prefixes each of the comma-separated columns with table.
func qualified(table, columns string) string {
	fields := strings.Split(columns, ",")
	for i, f := range fields {
		fields[i] = table + "." + strings.TrimSpace(f)
	}
	return strings.Join(fields, ", ")
}

// scanFunc lets a function stand where a row is scanned.
type scanFunc func(dest ...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }
