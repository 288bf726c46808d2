package racktest

import (
	"context"
	"fmt"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/datastore"
)

// Role is what a token lets its caller do (N10).
type Role struct {
	name  string
	grant app.Grant
}

// FleetAdmin may do anything.
var FleetAdmin = Role{name: "admin", grant: app.Grant{FleetAdmin: true}}

// Collaborator may operate the project's instances.
func Collaborator(project string) Role {
	return Role{name: "collaborator", grant: app.Grant{Project: project, Role: "collaborator"}}
}

// Viewer may only read the project.
func Viewer(project string) Role {
	return Role{name: "viewer", grant: app.Grant{Project: project, Role: "viewer"}}
}

var principals atomic.Int64

// mintToken writes a token of role for a new principal into the database,
// as `nexus token create` does.
func mintToken(t testutil.TB, ds *datastore.DataStore, role Role) string {
	t.Helper()
	principal := fmt.Sprintf("racktest-%s-%d", role.name, principals.Add(1))
	secret, err := app.New(ds, nil, nil, zap.NewNop()).TokenCreate(context.Background(), principal, []app.Grant{role.grant}, 0)
	if err != nil {
		t.Fatalf("minting a %s token: %v", role.name, err)
	}
	return secret
}
