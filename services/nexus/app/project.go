package app

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/model"
)

const maxDescription = 512

func checkDescription(v *apierror.Violations, field, d string) {
	switch {
	case len(d) > maxDescription:
		v.Add(field, "is longer than %d characters", maxDescription)
	case !storable(d):
		v.Add(field, "must be UTF-8 without NUL characters")
	}
}

// storable says whether text can be stored by both database engines:
// PostgreSQL refuses NUL and invalid UTF-8 (SPEC 7: 400, never 500).
func storable(text string) bool {
	return utf8.ValidString(text) && !strings.ContainsRune(text, 0)
}

// ProjectCreate creates a project (N9).
func (n *Nexus) ProjectCreate(ctx context.Context, params *nexusv1.ProjectCreateParams) (model.Project, error) {
	var v apierror.Violations
	if err := authz.RequireFleetAdmin(ctx, "create projects"); err != nil {
		return model.Project{}, err
	}
	if params == nil {
		v.Add("body", "is required")
		return model.Project{}, v.Err()
	}
	checkName(&v, "name", params.GetName())
	checkDescription(&v, "description", params.GetDescription())
	if err := v.Err(); err != nil {
		return model.Project{}, err
	}
	p := model.Project{ID: uuid.New(), Name: params.GetName(), Description: params.GetDescription(), TimeCreated: time.Now()}
	if err := n.ds.ProjectCreate(ctx, p); err != nil {
		return model.Project{}, err
	}
	return n.ds.ProjectGet(ctx, p.ID)
}

// lookupProject resolves a project name or id (already validated) that the
// caller may read.
func (n *Nexus) lookupProject(ctx context.Context, ref nameOrID) (model.Project, error) {
	var (
		p   model.Project
		err error
	)
	if ref.name != "" {
		p, err = n.ds.ProjectLookup(ctx, ref.name)
	} else {
		p, err = n.ds.ProjectGet(ctx, ref.id)
	}
	if err != nil {
		return model.Project{}, err
	}
	if !authz.CanReadProject(ctx, p.ID) {
		return model.Project{}, fmt.Errorf("%w: no role on project %s", authz.ErrForbidden, p.Name)
	}
	return p, nil
}

// Project returns a project by name or id.
func (n *Nexus) Project(ctx context.Context, project string) (model.Project, error) {
	var v apierror.Violations
	ref := parseNameOrID(&v, "project", project)
	if err := v.Err(); err != nil {
		return model.Project{}, err
	}
	return n.lookupProject(ctx, ref)
}

// ProjectList lists projects a page at a time, in one of Oxide's sort
// modes (by name by default).
func (n *Nexus) ProjectList(ctx context.Context, req *nexusv1.ProjectListRequest) ([]model.Project, *string, error) {
	var v apierror.Violations
	p := parsePage(&v, "projects", req.GetLimit(), req.GetPageToken(), req.GetSortBy(), nameOrIDSorts...)
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	page, err := n.ds.ProjectList(ctx, p.order(), p.after, p.limit)
	if err != nil || len(page) == 0 {
		return nil, nil, err
	}
	// The page is cut before filtering, so the token resumes after what was
	// read, not after what the caller may see.
	last := page[len(page)-1]
	key := p.key(last.Name, last.ID)
	visible := page[:0]
	for _, proj := range page {
		if authz.CanReadProject(ctx, proj.ID) {
			visible = append(visible, proj)
		}
	}
	return visible, p.next(len(page), key), nil
}

// ProjectUpdate renames and/or redescribes a project.
func (n *Nexus) ProjectUpdate(ctx context.Context, project string, params *nexusv1.ProjectUpdateParams) (model.Project, error) {
	var v apierror.Violations
	ref := parseNameOrID(&v, "project", project)
	if params.Name != nil {
		checkName(&v, "name", params.GetName())
	}
	if params.Description != nil {
		checkDescription(&v, "description", params.GetDescription())
	}
	if err := v.Err(); err != nil {
		return model.Project{}, err
	}
	p, err := n.lookupProject(ctx, ref)
	if err != nil {
		return model.Project{}, err
	}
	if err := authz.RequireProjectRole(ctx, p.ID, authz.RoleCollaborator, "update project "+p.Name); err != nil {
		return model.Project{}, err
	}
	return n.ds.ProjectUpdate(ctx, p.ID, params.Name, params.Description, time.Now())
}

// ProjectDelete deletes an empty project.
func (n *Nexus) ProjectDelete(ctx context.Context, project string) error {
	if err := authz.RequireFleetAdmin(ctx, "delete projects"); err != nil {
		return err
	}
	p, err := n.Project(ctx, project)
	if err != nil {
		return err
	}
	return n.ds.ProjectDelete(ctx, p.ID, time.Now())
}
