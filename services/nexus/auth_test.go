package nexus_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"

	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestN10_EveryExternalCallNeedsAValidBearerToken(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Backend: racktest.Backends[0]})
	n := r.Server()
	for name, token := range map[string]string{"missing": "", "unknown": "rkp_not-a-real-token"} {
		resp := racktest.NewClient(n.ExternalURL(), token).Call(t, "GET", "/v1/projects", "")
		if resp.Status != http.StatusUnauthorized {
			t.Fatalf("%s token: %d %s, want 401", name, resp.Status, resp.Body)
		}
	}
	_, err := racktest.NewClient(n.ExternalURL(), "rkp_nope").SDK(t).ProjectList(ctx, oxide.ProjectListParams{})
	if !errors.Is(err, oxide.ErrUnauthenticated) || !errors.Is(err, oxide.ErrHTTP401) {
		t.Fatalf("SDK with a bad token: %v, want Unauthorized", err)
	}
}

func TestN10_RolesDecideWhatACallerMayDo(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend})
			n := r.Server()
			admin := r.Client(racktest.FleetAdmin).SDK(t)
			for _, name := range []string{"alpha", "bravo"} {
				if _, err := admin.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: oxide.Name(name)}}); err != nil {
					t.Fatal(err)
				}
			}
			viewer := racktest.NewClient(n.ExternalURL(), r.InProcessNexus(0).Token("vera", app.Grant{Project: "alpha", Role: "viewer"})).SDK(t)
			collaborator := racktest.NewClient(n.ExternalURL(), r.InProcessNexus(0).Token("carl", app.Grant{Project: "alpha", Role: "collaborator"})).SDK(t)

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
	r := racktest.StartInProcess(t, racktest.Options{Backend: racktest.Backends[0]})
	n := r.Server()
	secret := r.InProcessNexus(0).Token("test-admin", app.Grant{FleetAdmin: true})
	if _, err := n.DataStore().TokenByHash(ctx, secret, time.Now()); err == nil {
		t.Fatal("the secret itself finds the token: it is stored in the clear")
	}
	if tok, err := n.DataStore().TokenByHash(ctx, authz.Hash(secret), time.Now()); err != nil || tok.Principal != "test-admin" {
		t.Fatalf("lookup by hash: %q, %v", tok.Principal, err)
	}
}

// Authentication is remembered for authn_cache_ttl, but never past the
// token's own expiry, and a token minted meanwhile works at once with its
// own roles.
func TestN10_ARememberedTokenNeverOutlivesItsExpiryAndANewTokenWorksAtOnce(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{NexusConfig: func(_ int, c *config.Config) {
		c.AuthnCacheTTL = duration.Duration(time.Hour)
	}})
	n := r.Server()
	admin := r.Client(racktest.FleetAdmin).SDK(t)
	if _, err := admin.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "alpha"}}); err != nil {
		t.Fatal(err)
	}
	patToken := r.InProcessNexus(0).Token("pat", app.Grant{Project: "alpha", Role: "viewer"})
	pat := racktest.NewClient(n.ExternalURL(), patToken).SDK(t)
	update := func() error {
		_, err := pat.ProjectUpdate(ctx, oxide.ProjectUpdateParams{Project: "alpha", Body: &oxide.ProjectUpdate{Description: "by pat"}})
		return err
	}
	if err := update(); !errors.Is(err, oxide.ErrHTTP403) {
		t.Fatalf("a viewer updating its project: %v, want 403", err)
	}
	// A token's roles are its own (N15): a second token of pat's, a
	// collaborator's, works at once and leaves the first a viewer's.
	more := racktest.NewClient(n.ExternalURL(), r.InProcessNexus(0).Token("pat", app.Grant{Project: "alpha", Role: "collaborator"})).SDK(t)
	if _, err := more.ProjectUpdate(ctx, oxide.ProjectUpdateParams{Project: "alpha", Body: &oxide.ProjectUpdate{Description: "by pat"}}); err != nil {
		t.Fatalf("pat's new collaborator token updating the project: %v", err)
	}
	if err := update(); !errors.Is(err, oxide.ErrHTTP403) {
		t.Fatalf("pat's viewer token, after a collaborator token was minted: %v, want 403", err)
	}

	expires := time.Now().Add(1500 * time.Millisecond)
	secret, err := n.App().TokenCreate(ctx, "brief", []app.Grant{{FleetAdmin: true}}, time.Until(expires))
	if err != nil {
		t.Fatal(err)
	}
	brief := racktest.NewClient(n.ExternalURL(), secret).SDK(t)
	if _, err := brief.ProjectList(ctx, oxide.ProjectListParams{}); err != nil {
		t.Fatalf("a fresh token: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		_, err := brief.ProjectList(ctx, oxide.ProjectListParams{})
		if errors.Is(err, oxide.ErrHTTP401) {
			return nil
		}
		return fmt.Errorf("a token past its expiry (%s ago) still answers %v", time.Since(expires).Round(time.Millisecond), err)
	})
	if time.Now().Before(expires) {
		t.Fatal("the token was refused before it expired")
	}
}
