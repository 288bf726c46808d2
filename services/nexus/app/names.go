package app

import (
	"regexp"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/apierror"
)

// Oxide's name rule: a lowercase ASCII letter, then letters, digits and
// hyphens, not ending with a hyphen, at most 63 characters, and not a UUID.
var namePattern = regexp.MustCompile(`^[a-z]([a-zA-Z0-9-]*[a-zA-Z0-9])?$`)

// checkName records a violation when name is not a valid Oxide name.
func checkName(v *apierror.Violations, field, name string) {
	switch {
	case name == "":
		v.Add(field, "is required")
	case len(name) > 63:
		v.Add(field, "%q is longer than 63 characters", name)
	case isUUID(name):
		v.Add(field, "names cannot be a UUID, but %q is", name)
	case !namePattern.MatchString(name):
		v.Add(field, "%q must begin with a lowercase letter, contain only letters, digits and '-', and not end with '-'", name)
	}
}

func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

// nameOrID is a path or query parameter that names a resource either way.
type nameOrID struct {
	id   uuid.UUID
	name string
}

// parseNameOrID validates an Oxide NameOrId parameter.
func parseNameOrID(v *apierror.Violations, field, s string) nameOrID {
	if isUUID(s) {
		return nameOrID{id: uuid.MustParse(s)}
	}
	checkName(v, field, s)
	return nameOrID{name: s}
}
