package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// ProjectCreate inserts a project; model.ErrAlreadyExists when the name is taken.
func (d *DataStore) ProjectCreate(ctx context.Context, p model.Project) error {
	_, err := d.db.ExecContext(ctx, `
		INSERT INTO project (id, name, description, time_created, time_modified) VALUES ($1, $2, $3, $4, $4)`,
		p.ID.String(), p.Name, p.Description, ts(p.TimeCreated))
	return d.classify(err)
}

const projectColumns = `id, name, description, time_created, time_modified`

func scanProject(row rowScanner) (model.Project, error) {
	var (
		p                 model.Project
		id                string
		created, modified dbTime
	)
	if err := row.Scan(&id, &p.Name, &p.Description, &created, &modified); err != nil {
		return model.Project{}, err
	}
	p.ID, p.TimeCreated, p.TimeModified = uuid.MustParse(id), created.Time, modified.Time
	return p, nil
}

// ProjectGet returns a live project by id.
func (d *DataStore) ProjectGet(ctx context.Context, id uuid.UUID) (model.Project, error) {
	p, err := scanProject(d.db.QueryRowContext(ctx,
		`SELECT `+projectColumns+` FROM project WHERE id = $1 AND time_deleted IS NULL`, id.String()))
	if isNoRows(err) {
		return model.Project{}, fmt.Errorf("%w: project %s", model.ErrNotFound, id)
	}
	return p, d.classify(err)
}

// ProjectLookup returns a live project by name.
func (d *DataStore) ProjectLookup(ctx context.Context, name string) (model.Project, error) {
	p, err := scanProject(d.db.QueryRowContext(ctx,
		`SELECT `+projectColumns+` FROM project WHERE name = $1 AND time_deleted IS NULL`, name))
	if isNoRows(err) {
		return model.Project{}, fmt.Errorf("%w: project %q", model.ErrNotFound, name)
	}
	return p, d.classify(err)
}

// ProjectList returns up to limit live projects in order, starting after
// the given name or id (keyset pagination: stable under inserts).
func (d *DataStore) ProjectList(ctx context.Context, order ListOrder, after string, limit int) ([]model.Project, error) {
	where, orderBy := order.keyset(1)
	return list(ctx, d, scanProject, `SELECT `+projectColumns+` FROM project
		WHERE time_deleted IS NULL AND `+where+` ORDER BY `+orderBy+` LIMIT $2`, after, limit)
}

// ProjectUpdate changes a live project's name and/or description (nil
// leaves a field as it is) and returns it; model.ErrAlreadyExists when the new name
// is taken.
func (d *DataStore) ProjectUpdate(ctx context.Context, id uuid.UUID, name, description *string, at time.Time) (model.Project, error) {
	p, err := scanProject(d.db.QueryRowContext(ctx, `
		UPDATE project SET name = COALESCE($2, name), description = COALESCE($3, description), time_modified = $4
		WHERE id = $1 AND time_deleted IS NULL
		RETURNING `+projectColumns, id.String(), name, description, ts(at)))
	if isNoRows(err) {
		return model.Project{}, fmt.Errorf("%w: project %s", model.ErrNotFound, id)
	}
	return p, d.classify(err)
}

// ProjectDelete soft-deletes a live project that holds no live instance;
// model.ErrInUse when it still does.
func (d *DataStore) ProjectDelete(ctx context.Context, id uuid.UUID, at time.Time) error {
	// The project's row is locked first, then its instances counted in a
	// statement of their own: an instance create holds the row shared while
	// it inserts (InstanceCreate), so the count sees every instance whose
	// create got in first, and a create that comes later finds the project
	// deleted. One statement reading both tables let both through on
	// PostgreSQL, each blind to the other's uncommitted row.
	return d.inTx(ctx, func(tx *sql.Tx) error {
		var found string
		err := tx.QueryRowContext(ctx, `SELECT id FROM project WHERE id = $1 AND time_deleted IS NULL`+d.projectLock(" FOR UPDATE"),
			id.String()).Scan(&found)
		if isNoRows(err) {
			return fmt.Errorf("%w: project %s", model.ErrNotFound, id)
		}
		if err != nil {
			return d.classify(err)
		}
		var holds bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM instance WHERE project_id = $1 AND time_deleted IS NULL)`,
			id.String()).Scan(&holds); err != nil {
			return d.classify(err)
		}
		if holds {
			return fmt.Errorf("%w: project %s still holds instances", model.ErrInUse, id)
		}
		_, err = tx.ExecContext(ctx, `UPDATE project SET time_deleted = $2 WHERE id = $1`, id.String(), ts(at))
		return d.classify(err)
	})
}

// projectLock is clause on PostgreSQL, where a project's delete and the
// creates of instances in it must be ordered by the project's row; SQLite
// runs one writer at a time already.
func (d *DataStore) projectLock(clause string) string {
	if d.backend == Postgres {
		return clause
	}
	return ""
}
