package app

import (
	"context"
	"time"

	"github.com/google/uuid"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/datastore"
)

const maxDescription = 512

func checkDescription(v *apierror.Violations, field, d string) {
	if len(d) > maxDescription {
		v.Add(field, "is longer than %d characters", maxDescription)
	}
}

// ProjectCreate creates a project (N9).
func (n *Nexus) ProjectCreate(ctx context.Context, params *nexusv1.ProjectCreateParams) (datastore.Project, error) {
	var v apierror.Violations
	if params == nil {
		v.Add("body", "is required")
		return datastore.Project{}, v.Err()
	}
	checkName(&v, "name", params.GetName())
	checkDescription(&v, "description", params.GetDescription())
	if err := v.Err(); err != nil {
		return datastore.Project{}, err
	}
	p := datastore.Project{ID: uuid.New(), Name: params.GetName(), Description: params.GetDescription(), TimeCreated: time.Now()}
	if err := n.ds.ProjectCreate(ctx, p); err != nil {
		return datastore.Project{}, err
	}
	return n.ds.ProjectGet(ctx, p.ID)
}

// lookupProject resolves a project name or id (already validated).
func (n *Nexus) lookupProject(ctx context.Context, ref nameOrID) (datastore.Project, error) {
	if ref.name != "" {
		return n.ds.ProjectLookup(ctx, ref.name)
	}
	return n.ds.ProjectGet(ctx, ref.id)
}

// Project returns a project by name or id.
func (n *Nexus) Project(ctx context.Context, project string) (datastore.Project, error) {
	var v apierror.Violations
	ref := parseNameOrID(&v, "project", project)
	if err := v.Err(); err != nil {
		return datastore.Project{}, err
	}
	return n.lookupProject(ctx, ref)
}

// ProjectList lists projects a page at a time, by name (default) or id.
func (n *Nexus) ProjectList(ctx context.Context, req *nexusv1.ProjectListRequest) ([]datastore.Project, *string, error) {
	var v apierror.Violations
	p := parsePage(&v, req.GetLimit(), req.GetPageToken(), req.GetSortBy(), "name_ascending", "id_ascending")
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	sort := datastore.ProjectByName
	if p.sortBy == "id_ascending" {
		sort = datastore.ProjectByID
	}
	items, err := n.ds.ProjectList(ctx, sort, p.after, p.limit)
	if err != nil || len(items) == 0 {
		return items, nil, err
	}
	last := items[len(items)-1]
	key := last.Name
	if sort == datastore.ProjectByID {
		key = last.ID.String()
	}
	return items, p.next(len(items), key), nil
}

// ProjectUpdate renames and/or redescribes a project.
func (n *Nexus) ProjectUpdate(ctx context.Context, project string, params *nexusv1.ProjectUpdateParams) (datastore.Project, error) {
	var v apierror.Violations
	ref := parseNameOrID(&v, "project", project)
	if params.Name != nil {
		checkName(&v, "name", params.GetName())
	}
	if params.Description != nil {
		checkDescription(&v, "description", params.GetDescription())
	}
	if err := v.Err(); err != nil {
		return datastore.Project{}, err
	}
	p, err := n.lookupProject(ctx, ref)
	if err != nil {
		return datastore.Project{}, err
	}
	return n.ds.ProjectUpdate(ctx, p.ID, params.Name, params.Description, time.Now())
}

// ProjectDelete deletes an empty project.
func (n *Nexus) ProjectDelete(ctx context.Context, project string) error {
	p, err := n.Project(ctx, project)
	if err != nil {
		return err
	}
	return n.ds.ProjectDelete(ctx, p.ID, time.Now())
}
