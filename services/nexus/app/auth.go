package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// ErrUnauthenticated means no valid token came with the request.
var ErrUnauthenticated = errors.New("unauthenticated")

// Authenticate resolves an Authorization header to the caller (N10).
func (n *Nexus) Authenticate(ctx context.Context, authorization string) (*authz.Actor, error) {
	secret, ok := authz.BearerToken(authorization)
	if !ok {
		return nil, fmt.Errorf("%w: an Authorization: Bearer <token> header is required", ErrUnauthenticated)
	}
	hash, now := authz.Hash(secret), time.Now()
	if actor, ok := n.authn.get(hash, now); ok {
		return actor, nil
	}
	tok, err := n.ds.TokenByHash(ctx, hash, now)
	if errors.Is(err, model.ErrNotFound) {
		return nil, fmt.Errorf("%w: unknown or expired token", ErrUnauthenticated)
	}
	if err != nil {
		return nil, err
	}
	actor := &authz.Actor{Principal: tok.Principal, Projects: map[uuid.UUID]authz.Role{}}
	for _, r := range tok.Roles {
		switch {
		case r.Resource == "fleet" && r.Role == "admin":
			actor.FleetAdmin = true
		case r.Resource == "project" && r.Role == "collaborator":
			actor.Projects[*r.ResourceID] = authz.RoleCollaborator
		case r.Resource == "project" && r.Role == "viewer" && actor.Projects[*r.ResourceID] < authz.RoleViewer:
			actor.Projects[*r.ResourceID] = authz.RoleViewer
		}
	}
	n.authn.put(hash, actor, tok.Expires, now)
	return actor, nil
}

// Grant is a role a new token's principal receives: FleetAdmin, or a role
// ("collaborator" or "viewer") on a project named by name or id.
type Grant struct {
	FleetAdmin bool
	Project    string
	Role       string
}

// TokenCreate mints a token for principal with the given grants and returns
// its secret, the only time the secret is ever seen. It is an operator
// action (the `nexus token create` command and the local cluster), not part
// of the external API.
func (n *Nexus) TokenCreate(ctx context.Context, principal string, grants []Grant, ttl time.Duration) (string, error) {
	var v apierror.Violations
	if principal == "" {
		v.Add("principal", "is required")
	}
	if len(grants) == 0 {
		v.Add("grants", "a token needs at least one role")
	}
	if err := v.Err(); err != nil {
		return "", err
	}
	var roles []model.RoleAssignment
	for _, g := range grants {
		if g.FleetAdmin {
			roles = append(roles, model.RoleAssignment{Principal: principal, Resource: "fleet", Role: "admin"})
			continue
		}
		if g.Role != "collaborator" && g.Role != "viewer" {
			return "", fmt.Errorf("role %q is not collaborator or viewer", g.Role)
		}
		p, err := n.Project(authz.WithActor(ctx, &authz.Actor{Principal: "token-create", FleetAdmin: true}), g.Project)
		if err != nil {
			return "", err
		}
		roles = append(roles, model.RoleAssignment{Principal: principal, Resource: "project", ResourceID: &p.ID, Role: g.Role})
	}
	secret, hash, err := authz.NewToken()
	if err != nil {
		return "", err
	}
	var expires *time.Time
	if ttl > 0 {
		at := time.Now().Add(ttl)
		expires = &at
	}
	if err := n.ds.TokenCreate(ctx, uuid.New(), hash, principal, expires, roles, time.Now()); err != nil {
		return "", err
	}
	// The grants may change the roles of the principal's other tokens.
	n.authn.forget()
	return secret, nil
}
