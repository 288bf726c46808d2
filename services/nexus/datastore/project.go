package datastore

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// ProjectCreate inserts a project; ErrAlreadyExists when the name is taken.
func (d *DataStore) ProjectCreate(ctx context.Context, p Project) error {
	_, err := d.db.ExecContext(ctx, `
		INSERT INTO project (id, name, description, time_created, time_modified) VALUES ($1, $2, $3, $4, $4)`,
		p.ID.String(), p.Name, p.Description, ts(p.TimeCreated))
	return d.classify(err)
}

const projectColumns = `id, name, description, time_created, time_modified`

func scanProject(row interface{ Scan(...any) error }) (Project, error) {
	var (
		p                 Project
		id                string
		created, modified dbTime
	)
	if err := row.Scan(&id, &p.Name, &p.Description, &created, &modified); err != nil {
		return Project{}, err
	}
	p.ID, p.TimeCreated, p.TimeModified = uuid.MustParse(id), created.Time, modified.Time
	return p, nil
}

// ProjectGet returns a live project by id.
func (d *DataStore) ProjectGet(ctx context.Context, id uuid.UUID) (Project, error) {
	p, err := scanProject(d.db.QueryRowContext(ctx,
		`SELECT `+projectColumns+` FROM project WHERE id = $1 AND time_deleted IS NULL`, id.String()))
	if isNoRows(err) {
		return Project{}, fmt.Errorf("%w: project %s", ErrNotFound, id)
	}
	return p, d.classify(err)
}

// ProjectLookup returns a live project by name.
func (d *DataStore) ProjectLookup(ctx context.Context, name string) (Project, error) {
	p, err := scanProject(d.db.QueryRowContext(ctx,
		`SELECT `+projectColumns+` FROM project WHERE name = $1 AND time_deleted IS NULL`, name))
	if isNoRows(err) {
		return Project{}, fmt.Errorf("%w: project %q", ErrNotFound, name)
	}
	return p, d.classify(err)
}
