package nexus_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/racktest"
)

// N15: GET /v1/me names the caller, with an id that stays the same and
// the fleet role it holds, through the Oxide SDK.
func TestN15_MeNamesTheCallerAndWhetherItSeesTheFleet(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
			me, err := admin.SDK(t).CurrentUserView(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(me.DisplayName, "racktest-admin-") || me.FleetViewer == nil || !*me.FleetViewer ||
				me.SiloName == "" || uuid.Validate(me.Id) != nil || uuid.Validate(me.SiloId) != nil {
				t.Fatalf("a fleet admin's /v1/me: %+v", me)
			}
			again, err := admin.SDK(t).CurrentUserView(ctx)
			if err != nil || again.Id != me.Id {
				t.Fatalf("the same caller's id changed: %s then %+v (%v)", me.Id, again, err)
			}
			collaborator, err := r.Client(racktest.Collaborator("demo")).SDK(t).CurrentUserView(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if collaborator.Id == me.Id || collaborator.FleetViewer == nil || *collaborator.FleetViewer {
				t.Fatalf("a collaborator's /v1/me: %+v (the admin's id %s)", collaborator, me.Id)
			}
			if resp := racktest.NewClient(r.Nexus(0).ExternalURL(), "").Call(t, http.MethodGet, "/v1/me", ""); resp.Status != http.StatusUnauthorized {
				t.Fatalf("/v1/me without a token: %d %s", resp.Status, resp.Body)
			}
		})
	}
}

// N15: a sled is viewed on its own, and lists the instances with a VMM on
// it: a running one, not a stopped one. Fleet admins only; a bad id is
// refused naming the field, an unknown one is 404.
func TestN15_ASledIsViewedWithTheInstancesRunningOnIt(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
			c := admin.SDK(t)
			createInstance(t, c, "demo", "runs", true)
			createInstance(t, c, "demo", "rests", false)
			running := waitRunState(t, c, "demo", "runs", oxide.InstanceStateRunning)
			sled := r.Sled(0).ID().String()

			view, err := c.SledView(ctx, oxide.SledViewParams{SledId: sled})
			if err != nil || view.Id != sled {
				t.Fatalf("sled view: %+v, %v", view, err)
			}
			items, err := c.SledInstanceListAllPages(ctx, oxide.SledInstanceListParams{SledId: sled})
			if err != nil {
				t.Fatal(err)
			}
			if len(items) != 1 || items[0].Id != running.Id || items[0].Name != "runs" || items[0].ProjectName != "demo" ||
				items[0].ActiveSledId != sled || items[0].State != oxide.InstanceStateRunning ||
				items[0].Ncpus == nil || *items[0].Ncpus != 2 || items[0].Memory == nil || *items[0].Memory != 4<<30 {
				t.Fatalf("the sled's instances: %+v, want only the running one", items)
			}

			if resp := admin.Call(t, http.MethodGet, "/v1/system/hardware/sleds/not-an-id", ""); resp.Status != http.StatusBadRequest ||
				!strings.Contains(string(resp.Body), "sled_id") {
				t.Fatalf("a bad sled id: %d %s", resp.Status, resp.Body)
			}
			if resp := admin.Call(t, http.MethodGet, "/v1/system/hardware/sleds/"+uuid.NewString()+"/instances", ""); resp.Status != http.StatusNotFound {
				t.Fatalf("an unknown sled's instances: %d %s", resp.Status, resp.Body)
			}
			collaborator := r.Client(racktest.Collaborator("demo"))
			for _, path := range []string{"/v1/system/hardware/sleds/" + sled, "/v1/system/hardware/sleds/" + sled + "/instances"} {
				if resp := collaborator.Call(t, http.MethodGet, path, ""); resp.Status != http.StatusForbidden {
					t.Fatalf("a collaborator's GET %s: %d %s", path, resp.Status, resp.Body)
				}
			}
		})
	}
}

// N15: PUT /v1/instances/{instance} changes a stopped instance's vCPUs,
// memory and auto-restart policy; a running one is refused, and so is bad
// input, naming the field; neither changes anything.
func TestN15_AStoppedInstanceIsUpdatedAndARunningOneIsNot(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
			c := r.Client(racktest.Collaborator("demo")).SDK(t)
			created := createInstance(t, c, "demo", "rests", false)
			never := oxide.InstanceAutoRestartPolicyNever
			updated, err := c.InstanceUpdate(ctx, oxide.InstanceUpdateParams{Project: "demo", Instance: "rests",
				Body: &oxide.InstanceUpdate{Ncpus: 4, Memory: 8 << 30, AutoRestartPolicy: &never}})
			if err != nil {
				t.Fatal(err)
			}
			if updated.Ncpus != 4 || updated.Memory != 8<<30 || updated.AutoRestartPolicy != never ||
				updated.RunState != oxide.InstanceStateStopped || !updated.TimeModified.After(*created.TimeModified) {
				t.Fatalf("updated: %+v", updated)
			}

			createInstance(t, c, "demo", "runs", true)
			waitRunState(t, c, "demo", "runs", oxide.InstanceStateRunning)
			_, err = c.InstanceUpdate(ctx, oxide.InstanceUpdateParams{Project: "demo", Instance: "runs",
				Body: &oxide.InstanceUpdate{Ncpus: 8, Memory: 8 << 30}})
			var httpErr *oxide.HTTPError
			if !errors.As(err, &httpErr) || httpErr.HTTPResponse.StatusCode/100 != 4 || !strings.Contains(httpErr.ErrorResponse.Message, "stop") ||
				!strings.Contains(httpErr.ErrorResponse.Message, "is running") {
				t.Fatalf("updating a running instance: %v, want a 4xx saying it is running and to stop it", err)
			}
			if got := waitRunState(t, c, "demo", "runs", oxide.InstanceStateRunning); got.Ncpus != 2 {
				t.Fatalf("a refused update changed the running instance: %+v", got)
			}

			for body, field := range map[string]string{
				`{"ncpus":0,"memory":8589934592,"auto_restart_policy":null}`:        "ncpus",
				`{"ncpus":2,"memory":1000,"auto_restart_policy":null}`:              "memory",
				`{"ncpus":2,"memory":8589934592,"auto_restart_policy":"sometimes"}`: "auto_restart_policy",
			} {
				resp := r.Client(racktest.FleetAdmin).Call(t, http.MethodPut, "/v1/instances/rests?project=demo", body)
				if resp.Status != http.StatusBadRequest || !strings.Contains(string(resp.Body), field) {
					t.Fatalf("PUT %s: %d %s, want 400 naming %s", body, resp.Status, resp.Body, field)
				}
			}
			if got, err := c.InstanceView(ctx, oxide.InstanceViewParams{Project: "demo", Instance: "rests"}); err != nil ||
				got.Ncpus != 4 || got.Memory != 8<<30 || got.AutoRestartPolicy != never {
				t.Fatalf("bad updates changed the instance: %+v, %v", got, err)
			}
		})
	}
}

type accessToken struct {
	ID          string     `json:"id"`
	TimeCreated time.Time  `json:"time_created"`
	TimeExpires *time.Time `json:"time_expires"`
	Principal   *string    `json:"principal"`
}

// N15: a principal lists and revokes its own tokens, and a fleet admin
// anyone's; a revoked token is refused at once by the replica that
// revoked it. Nobody else's token can be seen or revoked through
// /v1/me, and the fleet-wide routes take a fleet admin.
func TestN15_TokensAreListedAndRevokedByTheirPrincipalOrAFleetAdmin(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
			alice, bob := r.Client(racktest.Collaborator("demo")), r.Client(racktest.Viewer("demo"))

			mine := listTokens(t, alice, "/v1/me/access-tokens")
			if len(mine) != 1 || mine[0].Principal != nil || mine[0].TimeCreated.IsZero() {
				t.Fatalf("alice's own tokens: %+v, want her one token without a principal", mine)
			}
			bobs := listTokens(t, bob, "/v1/me/access-tokens")
			if len(bobs) != 1 || bobs[0].ID == mine[0].ID {
				t.Fatalf("bob's own tokens: %+v (alice's %+v)", bobs, mine)
			}
			if resp := alice.Call(t, http.MethodGet, "/v1/system/access-tokens", ""); resp.Status != http.StatusForbidden {
				t.Fatalf("a collaborator listing every token: %d %s", resp.Status, resp.Body)
			}
			if resp := alice.Call(t, http.MethodDelete, "/v1/me/access-tokens/"+bobs[0].ID, ""); resp.Status != http.StatusNotFound {
				t.Fatalf("alice revoking bob's token through /v1/me: %d %s", resp.Status, resp.Body)
			}
			if resp := alice.Call(t, http.MethodDelete, "/v1/me/access-tokens/not-an-id", ""); resp.Status != http.StatusBadRequest ||
				!strings.Contains(string(resp.Body), "token_id") {
				t.Fatalf("a bad token id: %d %s", resp.Status, resp.Body)
			}
			bob.MustCall(t, http.MethodGet, "/v1/projects/demo", "", http.StatusOK)

			all := listTokens(t, admin, "/v1/system/access-tokens")
			principals := map[string]string{}
			for _, tok := range all {
				if tok.Principal == nil {
					t.Fatalf("the fleet-wide list shows a token without its principal: %+v", tok)
				}
				principals[tok.ID] = *tok.Principal
			}
			if len(all) != 3 || principals[mine[0].ID] == "" || principals[bobs[0].ID] == "" {
				t.Fatalf("every token: %+v, want the admin's, alice's and bob's", all)
			}

			alice.MustCall(t, http.MethodDelete, "/v1/me/access-tokens/"+mine[0].ID, "", http.StatusNoContent)
			if resp := alice.Call(t, http.MethodGet, "/v1/projects/demo", ""); resp.Status != http.StatusUnauthorized {
				t.Fatalf("alice's revoked token: %d %s", resp.Status, resp.Body)
			}
			admin.MustCall(t, http.MethodDelete, "/v1/system/access-tokens/"+bobs[0].ID, "", http.StatusNoContent)
			if resp := bob.Call(t, http.MethodGet, "/v1/projects/demo", ""); resp.Status != http.StatusUnauthorized {
				t.Fatalf("bob's token revoked by an admin: %d %s", resp.Status, resp.Body)
			}
			if got := listTokens(t, admin, "/v1/system/access-tokens"); len(got) != 1 {
				t.Fatalf("after two revocations, every token: %+v", got)
			}
			if resp := admin.Call(t, http.MethodDelete, "/v1/system/access-tokens/"+bobs[0].ID, ""); resp.Status != http.StatusNotFound {
				t.Fatalf("revoking a revoked token: %d %s", resp.Status, resp.Body)
			}
		})
	}
}

// N15: a token revoked on one replica is refused by another within its
// authn_cache_ttl, and at once by the one that revoked it.
func TestN15_ATokenRevokedOnOneReplicaIsRefusedByTheOthersWithinTheCacheTTL(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Backend: datastore.Postgres, Nexuses: 2, Sleds: 1})
	admin := r.Client(racktest.FleetAdmin)
	admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
	secret := r.Token(racktest.Collaborator("demo"))
	on := func(i int) *racktest.Client { return racktest.NewClient(r.Nexus(i).ExternalURL(), secret) }
	on(0).MustCall(t, http.MethodGet, "/v1/projects/demo", "", http.StatusOK)
	on(1).MustCall(t, http.MethodGet, "/v1/projects/demo", "", http.StatusOK)
	mine := listTokens(t, on(1), "/v1/me/access-tokens")
	on(1).MustCall(t, http.MethodDelete, "/v1/me/access-tokens/"+mine[0].ID, "", http.StatusNoContent)
	if resp := on(1).Call(t, http.MethodGet, "/v1/projects/demo", ""); resp.Status != http.StatusUnauthorized {
		t.Fatalf("the revoking replica: %d %s", resp.Status, resp.Body)
	}
	// authn_cache_ttl is 1 s by default; the other replica may answer
	// from its cache until then, never after.
	testutil.WaitFor(t, 5*time.Second, func() error {
		if resp := on(0).Call(t, http.MethodGet, "/v1/projects/demo", ""); resp.Status != http.StatusUnauthorized {
			return fmt.Errorf("the other replica still answers %d", resp.Status)
		}
		return nil
	})
}

func listTokens(t *testing.T, c *racktest.Client, path string) []accessToken {
	t.Helper()
	items, err := racktest.List[accessToken](ctx, c, path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return items
}

// N15: a fleet admin mints a token over the API for a principal and the
// roles it grants; the secret is in that answer only, and works at once
// with exactly those roles. Others may not mint; bad grants are refused
// naming the field.
func TestN15_AFleetAdminMintsATokenWithTheRolesItGrants(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
			resp := admin.MustCall(t, http.MethodPost, "/v1/system/access-tokens",
				`{"principal":"carol","roles":[{"role":"viewer","project":"demo"}],"expires_in_seconds":3600}`, http.StatusCreated)
			var created struct {
				ID          string     `json:"id"`
				Token       string     `json:"token"`
				Principal   string     `json:"principal"`
				TimeExpires *time.Time `json:"time_expires"`
			}
			if err := json.Unmarshal(resp.Body, &created); err != nil {
				t.Fatal(err)
			}
			if created.Principal != "carol" || created.Token == "" || created.TimeExpires == nil ||
				time.Until(*created.TimeExpires) < 59*time.Minute {
				t.Fatalf("minted: %s", resp.Body)
			}
			carol := racktest.NewClient(r.Nexus(0).ExternalURL(), created.Token)
			carol.MustCall(t, http.MethodGet, "/v1/projects/demo", "", http.StatusOK)
			if resp := carol.Call(t, http.MethodPost, "/v1/instances?project=demo",
				`{"name":"x","description":"","hostname":"x","memory":1073741824,"ncpus":1,"start":false}`); resp.Status != http.StatusForbidden {
				t.Fatalf("a viewer's create: %d %s", resp.Status, resp.Body)
			}
			if mine := listTokens(t, carol, "/v1/me/access-tokens"); len(mine) != 1 || mine[0].ID != created.ID {
				t.Fatalf("carol's tokens: %+v, want the one minted (%s)", mine, created.ID)
			}
			if resp := carol.Call(t, http.MethodPost, "/v1/system/access-tokens", `{"principal":"carol","roles":[{"role":"admin"}]}`); resp.Status != http.StatusForbidden {
				t.Fatalf("a viewer minting itself an admin token: %d %s", resp.Status, resp.Body)
			}
			for body, field := range map[string]string{
				`{"principal":"dave","roles":[{"role":"owner","project":"demo"}]}`: "roles[0].role",
				`{"principal":"dave","roles":[{"role":"viewer"}]}`:                 "roles[0].project",
				`{"principal":"dave","roles":[{"role":"admin","project":"demo"}]}`: "roles[0].project",
				`{"principal":"","roles":[{"role":"admin"}]}`:                      "principal",
				`{"principal":"dave","roles":[]}`:                                  "roles",
			} {
				if resp := admin.Call(t, http.MethodPost, "/v1/system/access-tokens", body); resp.Status != http.StatusBadRequest ||
					!strings.Contains(string(resp.Body), field) {
					t.Fatalf("minting %s: %d %s, want 400 naming %s", body, resp.Status, resp.Body, field)
				}
			}
			if got := listTokens(t, admin, "/v1/system/access-tokens"); len(got) != 2 {
				t.Fatalf("refused mints left tokens behind: %+v", got)
			}
		})
	}
}

// N10, N15: a token has the roles it was minted with. Two grants on one
// project give the greater whatever their order; a later token of the
// same principal with a lesser role lowers no other token; a revoked
// token's roles go with it.
func TestN15_ATokenHasTheRolesItWasMintedWithWhateverThePrincipalsOtherTokens(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
			mint := func(roles string) *racktest.Client {
				t.Helper()
				resp := admin.MustCall(t, http.MethodPost, "/v1/system/access-tokens", `{"principal":"erin","roles":`+roles+`}`, http.StatusCreated)
				var created struct {
					Token string `json:"token"`
				}
				if err := json.Unmarshal(resp.Body, &created); err != nil {
					t.Fatal(err)
				}
				return racktest.NewClient(r.Nexus(0).ExternalURL(), created.Token)
			}
			canCreate := func(c *racktest.Client, name string) bool {
				t.Helper()
				resp := c.Call(t, http.MethodPost, "/v1/instances?project=demo",
					`{"name":"`+name+`","description":"","hostname":"`+name+`","memory":1073741824,"ncpus":1,"start":false}`)
				if resp.Status != http.StatusCreated && resp.Status != http.StatusForbidden {
					t.Fatalf("create %s: %d %s", name, resp.Status, resp.Body)
				}
				return resp.Status == http.StatusCreated
			}
			both := mint(`[{"role":"collaborator","project":"demo"},{"role":"viewer","project":"demo"}]`)
			if !canCreate(both, "a") {
				t.Fatal("collaborator then viewer on one project: not a collaborator")
			}
			reversed := mint(`[{"role":"viewer","project":"demo"},{"role":"collaborator","project":"demo"}]`)
			if !canCreate(reversed, "b") {
				t.Fatal("viewer then collaborator on one project: not a collaborator")
			}
			viewer := mint(`[{"role":"viewer","project":"demo"}]`)
			if canCreate(viewer, "c") {
				t.Fatal("erin's viewer token acts as her collaborator tokens do")
			}
			if !canCreate(both, "d") {
				t.Fatal("minting erin a viewer token lowered her collaborator token")
			}
			id := listTokens(t, viewer, "/v1/me/access-tokens")
			if len(id) != 3 {
				t.Fatalf("erin's tokens: %+v", id)
			}
			for _, tok := range id {
				admin.MustCall(t, http.MethodDelete, "/v1/system/access-tokens/"+tok.ID, "", http.StatusNoContent)
			}
			if canCreate(mint(`[{"role":"viewer","project":"demo"}]`), "e") {
				t.Fatal("a new viewer token of erin's kept the roles of her revoked tokens")
			}
		})
	}
}

// N15: an update may carry If-Match, the instance's time_modified as the
// caller read it: once another update has changed the instance, it is
// refused with 409 and changes nothing, so that a client changing one
// field never puts back another that someone else changed meanwhile.
func TestN15_AnUpdateWithAStaleIfMatchIsRefusedAndChangesNothing(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
			var read struct {
				ID           string `json:"id"`
				TimeModified string `json:"time_modified"`
				Ncpus        int    `json:"ncpus"`
			}
			admin.MustCall(t, http.MethodPost, "/v1/instances?project=demo",
				`{"name":"web","description":"","hostname":"web","memory":1073741824,"ncpus":1,"start":false}`, http.StatusCreated).JSON(&read)
			put := func(ifMatch, body string) racktest.Response {
				t.Helper()
				resp, err := admin.DoWith(ctx, http.MethodPut, "/v1/instances/"+read.ID, body, map[string]string{"If-Match": ifMatch})
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			if resp := put(read.TimeModified, `{"ncpus":2,"memory":1073741824,"auto_restart_policy":"never"}`); resp.Status != http.StatusOK {
				t.Fatalf("an update with the current If-Match: %d %s", resp.Status, resp.Body)
			}
			resp := put(read.TimeModified, `{"ncpus":4,"memory":1073741824,"auto_restart_policy":"best_effort"}`)
			if resp.Status != http.StatusConflict || !strings.Contains(string(resp.Body), "changed since it was read") {
				t.Fatalf("an update with a stale If-Match: %d %s, want 409", resp.Status, resp.Body)
			}
			var now struct {
				Ncpus             int    `json:"ncpus"`
				AutoRestartPolicy string `json:"auto_restart_policy"`
			}
			admin.MustCall(t, http.MethodGet, "/v1/instances/"+read.ID, "", http.StatusOK).JSON(&now)
			if now.Ncpus != 2 || now.AutoRestartPolicy != "never" {
				t.Fatalf("a refused update changed the instance: %+v", now)
			}
			if resp := put("yesterday", `{"ncpus":4,"memory":1073741824}`); resp.Status != http.StatusBadRequest ||
				!strings.Contains(string(resp.Body), "If-Match") {
				t.Fatalf("a malformed If-Match: %d %s, want 400 naming If-Match", resp.Status, resp.Body)
			}
		})
	}
}

// N10: a caller with no role on a project learns nothing of its
// instances: an instance id of that project is 404, as an id that names
// nothing, not 403 with the instance's name.
func TestN10_AnInstanceOfAProjectTheCallerCannotSeeIsNotFound(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"secret","description":""}`, http.StatusCreated)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"other","description":""}`, http.StatusCreated)
			var inst struct {
				ID string `json:"id"`
			}
			admin.MustCall(t, http.MethodPost, "/v1/instances?project=secret",
				`{"name":"hidden","description":"","hostname":"hidden","memory":1073741824,"ncpus":1,"start":false}`, http.StatusCreated).JSON(&inst)
			outsider := r.Client(racktest.Collaborator("other"))
			for _, call := range [][2]string{{http.MethodGet, ""}, {http.MethodPost, "/start"}, {http.MethodDelete, ""},
				{http.MethodPost, "/force-terminate"}} {
				resp := outsider.Call(t, call[0], "/v1/instances/"+inst.ID+call[1], "")
				if resp.Status != http.StatusNotFound || strings.Contains(string(resp.Body), "hidden") {
					t.Fatalf("%s /v1/instances/<id>%s by an outsider: %d %s, want 404 without the name", call[0], call[1], resp.Status, resp.Body)
				}
			}
			if resp := r.Client(racktest.Viewer("secret")).Call(t, http.MethodPost, "/v1/instances/"+inst.ID+"/start", ""); resp.Status != http.StatusForbidden {
				t.Fatalf("a viewer of the project starting it: %d %s, want 403", resp.Status, resp.Body)
			}
		})
	}
}

// N15: an update of an instance that shows stopped while an update saga
// still settles it (it holds the instance's updater lock, just after a
// stop) answers 503, retryable, saying so, and changes nothing; once the
// lock is released it goes through. It used to answer 400 "it may be
// starting".
func TestN15_AnUpdateWhileAnUpdateSagaSettlesTheInstanceIsRetryable(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
			var inst struct {
				ID string `json:"id"`
			}
			admin.MustCall(t, http.MethodPost, "/v1/instances?project=demo",
				`{"name":"web","description":"","hostname":"web","memory":1073741824,"ncpus":1,"start":false}`, http.StatusCreated).JSON(&inst)
			id, saga := uuid.MustParse(inst.ID), uuid.New()
			if locked, err := r.DataStore().InstanceUpdaterLock(ctx, id, saga, r.Nexus(0).ID()); err != nil || !locked {
				t.Fatalf("taking the updater lock: %v, %v", locked, err)
			}
			body := `{"ncpus":2,"memory":1073741824,"auto_restart_policy":null}`
			resp := admin.Call(t, http.MethodPut, "/v1/instances/"+inst.ID, body)
			if resp.Status != http.StatusServiceUnavailable || !strings.Contains(string(resp.Body), "being settled") {
				t.Fatalf("an update while an update saga holds the instance: %d %s, want 503 saying to try again", resp.Status, resp.Body)
			}
			if err := r.DataStore().InstanceUpdaterUnlock(ctx, id, saga); err != nil {
				t.Fatal(err)
			}
			admin.MustCall(t, http.MethodPut, "/v1/instances/"+inst.ID, body, http.StatusOK)
		})
	}
}
