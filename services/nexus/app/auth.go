package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

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
	epoch := n.authn.begin()
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
	n.authn.put(hash, actor, tok.Expires, now, epoch)
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
// its secret, the only time the secret is ever seen. It is the operator's
// way in (the `nexus token create` command and the local cluster), with
// no caller to authorize; over the API, AccessTokenCreate.
func (n *Nexus) TokenCreate(ctx context.Context, principal string, grants []Grant, ttl time.Duration) (string, error) {
	_, secret, err := n.createToken(ctx, principal, grants, ttl)
	return secret, err
}

// AccessTokenCreate mints a token for principal with the given grants
// (N15). Fleet admins only: a grant can be any role.
// expiresInSeconds 0 is a token that does not expire.
func (n *Nexus) AccessTokenCreate(ctx context.Context, principal string, grants []Grant, expiresInSeconds uint64) (model.AccessToken, string, error) {
	if err := authz.RequireFleetAdmin(ctx, "create access tokens"); err != nil {
		return model.AccessToken{}, "", err
	}
	if expiresInSeconds > uint64(MaxTokenLifetime/time.Second) {
		var v apierror.Violations
		v.Add("expires_in_seconds", "must be at most %d (100 years), got %d", uint64(MaxTokenLifetime/time.Second), expiresInSeconds)
		return model.AccessToken{}, "", v.Err()
	}
	return n.createToken(ctx, principal, grants, time.Duration(expiresInSeconds)*time.Second)
}

// MaxTokenLifetime bounds a token's lifetime, so that its expiry is a time
// every backend stores.
const MaxTokenLifetime = 100 * 365 * 24 * time.Hour

func (n *Nexus) createToken(ctx context.Context, principal string, grants []Grant, ttl time.Duration) (model.AccessToken, string, error) {
	var v apierror.Violations
	switch {
	case principal == "":
		v.Add("principal", "is required")
	case len(principal) > 128 || strings.IndexFunc(principal, func(r rune) bool { return !unicode.IsGraphic(r) || unicode.IsSpace(r) }) >= 0:
		// No spaces, controls or invisible characters: a principal is
		// shown in token listings, where two must never look alike.
		v.Add("principal", "must be at most 128 bytes of visible characters, without spaces")
	}
	if len(grants) == 0 {
		v.Add("roles", "a token needs at least one role")
	}
	for i, g := range grants {
		switch {
		case g.FleetAdmin && g.Project != "":
			v.Add(fmt.Sprintf("roles[%d].project", i), "admin is the fleet's role: it takes no project")
		case g.FleetAdmin:
		case g.Role != "collaborator" && g.Role != "viewer":
			v.Add(fmt.Sprintf("roles[%d].role", i), "%q is not admin, collaborator or viewer", g.Role)
		case g.Project == "":
			v.Add(fmt.Sprintf("roles[%d].project", i), "is required for a %s role", g.Role)
		default:
			parseNameOrID(&v, fmt.Sprintf("roles[%d].project", i), g.Project)
		}
	}
	if ttl < 0 || ttl > MaxTokenLifetime {
		v.Add("expires_in_seconds", "must be between 0 and %d", uint64(MaxTokenLifetime/time.Second))
	}
	if err := v.Err(); err != nil {
		return model.AccessToken{}, "", err
	}
	var roles []model.RoleAssignment
	onProject := map[uuid.UUID]int{} // index in roles
	for i, g := range grants {
		if g.FleetAdmin {
			if !slices.ContainsFunc(roles, func(r model.RoleAssignment) bool { return r.Resource == "fleet" }) {
				roles = append(roles, model.RoleAssignment{Principal: principal, Resource: "fleet", Role: "admin"})
			}
			continue
		}
		p, err := n.Project(authz.WithActor(ctx, &authz.Actor{Principal: "token-create", FleetAdmin: true}), g.Project)
		if err != nil {
			return model.AccessToken{}, "", fmt.Errorf("roles[%d].project: %w", i, err)
		}
		// Two grants on one project give the greater role, whatever
		// their order.
		if i, ok := onProject[p.ID]; ok {
			if g.Role == "collaborator" {
				roles[i].Role = g.Role
			}
			continue
		}
		onProject[p.ID] = len(roles)
		roles = append(roles, model.RoleAssignment{Principal: principal, Resource: "project", ResourceID: &p.ID, Role: g.Role})
	}
	return n.mintToken(ctx, principal, roles, ttl)
}

// mintToken stores a new token of principal, granting it roles, and
// returns it with its secret.
func (n *Nexus) mintToken(ctx context.Context, principal string, roles []model.RoleAssignment, ttl time.Duration) (model.AccessToken, string, error) {
	secret, hash, err := authz.NewToken()
	if err != nil {
		return model.AccessToken{}, "", err
	}
	tok := model.AccessToken{ID: uuid.New(), Principal: principal, TimeCreated: time.Now()}
	if ttl > 0 {
		at := tok.TimeCreated.Add(ttl)
		tok.TimeExpires = &at
	}
	if err := n.ds.TokenCreate(ctx, tok.ID, hash, principal, tok.TimeExpires, roles, tok.TimeCreated); err != nil {
		return model.AccessToken{}, "", err
	}
	return tok, secret, nil
}

// Me is the caller (N15). A caller is always authenticated by the time a
// handler runs; nil here is a handler without authentication.
func (n *Nexus) Me(ctx context.Context) (Me, error) {
	a := authz.FromContext(ctx)
	if a == nil {
		return Me{}, fmt.Errorf("%w: no caller", ErrUnauthenticated)
	}
	since, err := n.ds.PrincipalSince(ctx, a.Principal)
	if err != nil {
		return Me{}, err
	}
	return Me{Actor: a, Since: since}, nil
}

// Me is the caller, and since when its principal is known: its first
// token's creation (a principal is a name, with no record of its own).
type Me struct {
	*authz.Actor
	Since time.Time
}

// AccessTokens lists live API tokens a page at a time, by id: the
// caller's own, or with everyone every principal's (fleet admins only).
func (n *Nexus) AccessTokens(ctx context.Context, everyone bool, limit uint32, pageToken, sortBy string) ([]model.AccessToken, *string, error) {
	principal, listing, err := tokenScope(ctx, everyone, "list every principal's tokens")
	if err != nil {
		return nil, nil, err
	}
	var v apierror.Violations
	p := parsePage(&v, listing, limit, pageToken, sortBy, idSorts...)
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	items, err := n.ds.AccessTokenList(ctx, principal, time.Now(), p.after, p.limit)
	if err != nil || len(items) == 0 {
		return nil, nil, err
	}
	return items, p.next(len(items), items[len(items)-1].ID.String()), nil
}

// AccessTokenRevoke revokes an API token: one of the caller's own, or
// with everyone any principal's (fleet admins only). This replica refuses
// it from then on; other replicas within authn_cache_ttl, as long as they
// may trust what they authenticated.
func (n *Nexus) AccessTokenRevoke(ctx context.Context, everyone bool, tokenID string) error {
	principal, _, err := tokenScope(ctx, everyone, "revoke another principal's token")
	if err != nil {
		return err
	}
	var v apierror.Violations
	id := v.UUID("token_id", tokenID)
	if err := v.Err(); err != nil {
		return err
	}
	if err := n.ds.AccessTokenRevoke(ctx, id, principal, time.Now()); err != nil {
		return err
	}
	n.authn.forget()
	return nil
}

// tokenScope is whose tokens a call sees: the caller's own, or with
// everyone every principal's, which takes a fleet admin.
func tokenScope(ctx context.Context, everyone bool, what string) (principal, listing string, err error) {
	if everyone {
		return "", "access-tokens", authz.RequireFleetAdmin(ctx, what)
	}
	a := authz.FromContext(ctx)
	if a == nil {
		return "", "", fmt.Errorf("%w: no caller", ErrUnauthenticated)
	}
	return a.Principal, "access-tokens/" + a.Principal, nil
}
