package authz

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// TokenPrefix starts every token this nexus hands out, so a leaked one is
// recognisable in logs and scanners.
const TokenPrefix = "rkp_"

// ErrForbidden means the caller is known but may not do this.
var ErrForbidden = errors.New("forbidden")

// NewToken returns a fresh secret and the hash to store for it.
func NewToken() (secret, hash string, err error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", "", err
	}
	secret = TokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	return secret, Hash(secret), nil
}

// Hash is what is stored for, and looked up by, a secret.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// BearerToken extracts the secret from an Authorization header value.
func BearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// Role on a project.
type Role int

const (
	RoleNone Role = iota
	RoleViewer
	RoleCollaborator
)

// Actor is an authenticated caller and what it may do.
type Actor struct {
	Principal  string
	FleetAdmin bool
	Projects   map[uuid.UUID]Role
}

// principalIDs is the namespace of the ids derived from principals'
// names.
var principalIDs = uuid.MustParse("9f1c6f2e-3b6a-4f43-9d55-3a2f1f0b7c11")

// UserID is the caller's id as Oxide's API shows a user's: a principal
// here is a name, so its id is derived from it (the same name, the same
// id).
func (a *Actor) UserID() uuid.UUID {
	return uuid.NewSHA1(principalIDs, []byte(a.Principal))
}

type actorKey struct{}

// WithActor attaches the authenticated caller to ctx.
func WithActor(ctx context.Context, a *Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// FromContext returns the authenticated caller; nil when there is none,
// which every check below refuses.
func FromContext(ctx context.Context) *Actor {
	a, _ := ctx.Value(actorKey{}).(*Actor)
	return a
}

func (a *Actor) role(project uuid.UUID) Role {
	if a == nil {
		return RoleNone
	}
	return a.Projects[project]
}

func forbidden(a *Actor, what string) error {
	who := "an anonymous caller"
	if a != nil {
		who = a.Principal
	}
	return fmt.Errorf("%w: %s may not %s", ErrForbidden, who, what)
}

// RequireFleetAdmin allows fleet admins only.
func RequireFleetAdmin(ctx context.Context, what string) error {
	if a := FromContext(ctx); a == nil || !a.FleetAdmin {
		return forbidden(a, what)
	}
	return nil
}

// CanReadProject reports whether the caller may see the project at all.
func CanReadProject(ctx context.Context, project uuid.UUID) bool {
	a := FromContext(ctx)
	return a != nil && (a.FleetAdmin || a.role(project) >= RoleViewer)
}

// ProjectsWithRole is where the caller holds at least role, for a write that
// checks it in its own statement: every project (a fleet admin), or these.
// It agrees with RequireProjectRole.
func ProjectsWithRole(ctx context.Context, role Role) (all bool, projects []uuid.UUID) {
	a := FromContext(ctx)
	if a == nil {
		return false, nil
	}
	if a.FleetAdmin {
		return true, nil
	}
	for p, r := range a.Projects {
		if r >= role {
			projects = append(projects, p)
		}
	}
	return false, projects
}

// RequireProjectRole allows fleet admins and holders of at least role on
// the project.
func RequireProjectRole(ctx context.Context, project uuid.UUID, role Role, what string) error {
	a := FromContext(ctx)
	if a != nil && (a.FleetAdmin || a.role(project) >= role) {
		return nil
	}
	return forbidden(a, what)
}
