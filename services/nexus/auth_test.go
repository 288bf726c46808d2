package nexus_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"

	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/nexustest"
)

func TestN10_EveryExternalCallNeedsAValidBearerToken(t *testing.T) {
	n := nexustest.Start(t, nexustest.Backends[0])
	for name, token := range map[string]string{"missing": "", "unknown": "rkp_not-a-real-token"} {
		resp, data := do(t, token, "GET", n.ExternalURL()+"/v1/projects", "")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s token: %d %s, want 401", name, resp.StatusCode, data)
		}
	}
	_, err := sdkAs(t, n, "rkp_nope").ProjectList(ctx, oxide.ProjectListParams{})
	if !errors.Is(err, oxide.ErrUnauthenticated) || !errors.Is(err, oxide.ErrHTTP401) {
		t.Fatalf("SDK with a bad token: %v, want Unauthorized", err)
	}
}

func TestN10_RolesDecideWhatACallerMayDo(t *testing.T) {
	for _, backend := range nexustest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			n := nexustest.Start(t, backend)
			admin := sdk(t, n)
			for _, name := range []string{"alpha", "bravo"} {
				if _, err := admin.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: oxide.Name(name)}}); err != nil {
					t.Fatal(err)
				}
			}
			viewer := sdkAs(t, n, nexustest.Token(t, n, "vera", app.Grant{Project: "alpha", Role: "viewer"}))
			collaborator := sdkAs(t, n, nexustest.Token(t, n, "carl", app.Grant{Project: "alpha", Role: "collaborator"}))

			if _, err := viewer.ProjectView(ctx, oxide.ProjectViewParams{Project: "alpha"}); err != nil {
				t.Fatalf("viewer reading its project: %v", err)
			}
			page, err := viewer.ProjectList(ctx, oxide.ProjectListParams{})
			if err != nil || len(page.Items) != 1 || page.Items[0].Name != "alpha" {
				t.Fatalf("viewer's listing %+v, %v; want only alpha", page, err)
			}
			forbidden := map[string]error{}
			_, forbidden["viewer reads another project"] = viewer.ProjectView(ctx, oxide.ProjectViewParams{Project: "bravo"})
			_, forbidden["viewer updates"] = viewer.ProjectUpdate(ctx, oxide.ProjectUpdateParams{Project: "alpha", Body: &oxide.ProjectUpdate{Description: "x"}})
			_, forbidden["viewer creates a project"] = viewer.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "charlie"}})
			_, forbidden["viewer lists sleds"] = viewer.SledList(ctx, oxide.SledListParams{})
			forbidden["collaborator deletes its project"] = collaborator.ProjectDelete(ctx, oxide.ProjectDeleteParams{Project: "alpha"})
			for what, err := range forbidden {
				if !errors.Is(err, oxide.ErrForbidden) || !errors.Is(err, oxide.ErrHTTP403) {
					t.Errorf("%s: %v, want 403 Forbidden", what, err)
				}
			}
			if _, err := collaborator.ProjectUpdate(ctx, oxide.ProjectUpdateParams{Project: "alpha",
				Body: &oxide.ProjectUpdate{Description: "by carl"}}); err != nil {
				t.Fatalf("collaborator updating its project: %v", err)
			}
		})
	}
}

func TestN10_TokensAreStoredHashed(t *testing.T) {
	n := nexustest.Start(t, nexustest.Backends[0])
	secret := nexustest.AdminToken(t, n)
	if _, _, err := n.DataStore().TokenPrincipal(ctx, secret, time.Now()); err == nil {
		t.Fatal("the secret itself finds the token: it is stored in the clear")
	}
	if principal, _, err := n.DataStore().TokenPrincipal(ctx, authz.Hash(secret), time.Now()); err != nil || principal != "test-admin" {
		t.Fatalf("lookup by hash: %q, %v", principal, err)
	}
}
