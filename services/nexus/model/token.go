package model

import (
	"time"

	"github.com/google/uuid"
)

// RoleAssignment grants a principal a role on the fleet (ResourceID nil) or
// on one project.
type RoleAssignment struct {
	Principal  string
	Resource   string // "fleet" or "project"
	ResourceID *uuid.UUID
	Role       string // "admin", "collaborator" or "viewer"
}

// Token is a live token as authentication sees it: whose it is, the roles
// its principal holds, and when it expires (nil: never).
type Token struct {
	Principal string
	Roles     []RoleAssignment
	Expires   *time.Time
}

// AccessToken is a token as its holder sees it: never its secret.
type AccessToken struct {
	ID          uuid.UUID
	Principal   string
	TimeCreated time.Time
	// TimeExpires is nil for a token that does not expire.
	TimeExpires *time.Time
}
