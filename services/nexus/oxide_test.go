package nexus_test

import (
	"errors"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/oxidecomputer/oxide.go/oxide"

	"github.com/rackplane/rackplane/services/nexus/gateway"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/racktest/openapicheck"
)

// oxideDocumentEnv names a copy of Oxide's published nexus OpenAPI
// document of omicron rel/v20/rc1
// (openapi/nexus/nexus-2026060800.0.0-f1db6e.json, MPL-2.0), the one the
// Oxide Go SDK v0.10.0 was generated from. The document is data this
// repository may not keep, and CI has no copy; the SDK's types stand for
// it there (sdkDocument), and a developer who has it checks against both.
const oxideDocumentEnv = "RACKPLANE_OXIDE_OPENAPI"

const sdkDocumentName = "the Oxide Go SDK v0.10.0's types"

// oxideDocuments are the documents the conformance test holds the API's
// answers to, by name: the SDK's types always, and Oxide's document where
// oxideDocumentEnv names a copy (a name that cannot be read fails).
func oxideDocuments(t *testing.T) map[string][]byte {
	t.Helper()
	docs := map[string][]byte{sdkDocumentName: sdkDocument(t)}
	path := os.Getenv(oxideDocumentEnv)
	if path == "" {
		t.Logf("%s names no copy of Oxide's document: checking against the SDK's types alone", oxideDocumentEnv)
		return docs
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", oxideDocumentEnv, err)
	}
	docs["Oxide's document"] = data
	return docs
}

// sharedOperations lists the operations of Oxide's document that the
// served one has too, by method and path template (parameters' names
// aside), as Oxide's document names them.
func sharedOperations(oxideOps, ours []string) []string {
	param := regexp.MustCompile(`\{[^}]*\}`)
	have := map[string]bool{}
	for _, op := range ours {
		have[param.ReplaceAllString(op, "{}")] = true
	}
	var out []string
	for _, op := range oxideOps {
		if have[param.ReplaceAllString(op, "{}")] {
			out = append(out, op)
		}
	}
	return out
}

// oxideDifferences are the requests valid per Oxide's document that this
// product refuses on purpose, as README's "Differences from Oxide's API"
// says: each is 400 naming the field. The conformance test accepts these
// and no other refusal.
var oxideDifferences = []struct{ method, path, body, field string }{
	// A hostname is one label, as a sled-agent gives its guest; Oxide
	// takes dot-separated labels.
	{http.MethodPost, "/v1/instances?project=conformance",
		`{"name":"fqdn","description":"","hostname":"vm.example.com","memory":4294967296,"ncpus":1,"start":false}`, "hostname"},
	// A page holds at most 1,000 items; Oxide clamps a larger limit.
	{http.MethodGet, "/v1/projects?limit=5000", "", "limit"},
}

// N9: for every operation Oxide's published document (the one the Oxide
// Go SDK v0.10.0 was generated from) shares with this API, requests valid
// per that document, made as the SDK makes them, are accepted, and every
// answer validates against Oxide's schema for its status; the only
// refusals are the documented differences.
func TestN9_RequestsValidPerOxidesDocumentAreAcceptedAndAnsweredAsItSays(t *testing.T) {
	docs := oxideDocuments(t)
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			covs := map[string]*coverage{}
			through := func(c *racktest.Client) *racktest.Client {
				for name, doc := range docs {
					if covs[name] == nil {
						covs[name] = newCoverage(t, doc, openapicheck.OtherRoutesUnchecked())
					}
					c = covs[name].through(c)
				}
				return c
			}
			admin := through(r.Client(racktest.FleetAdmin))
			sdk := admin.SDK(t)

			oxideProjects(t, sdk)
			oxideInstances(t, sdk)
			oxideSleds(t, sdk, r.Sled(0).ID().String())
			oxideTokens(t, sdk, admin, through, r.Nexus(0).ExternalURL())
			for _, d := range oxideDifferences {
				if resp := admin.Call(t, d.method, d.path, d.body); resp.Status != http.StatusBadRequest ||
					!strings.Contains(resp.Error().Message, d.field) {
					t.Errorf("%s %s: %d %s, want the documented difference: 400 naming %s", d.method, d.path, resp.Status, resp.Body, d.field)
				}
			}
			if err := sdk.ProjectDelete(ctx, oxide.ProjectDeleteParams{Project: "conformance"}); err != nil {
				t.Fatal(err)
			}

			ours, err := openapicheck.New(gateway.OpenAPI)
			if err != nil {
				t.Fatal(err)
			}
			for name, cov := range covs {
				for _, e := range cov.problems {
					t.Errorf("disagrees with %s: %v", name, e)
				}
				theirs := cov.checker.Operations()
				shared := sharedOperations(theirs, ours.Operations())
				if !slices.Contains(shared, "POST /v1/instances") {
					t.Fatalf("the operations %s shares with this API: %v; POST /v1/instances is missing from them", name, shared)
				}
				if missing := cov.missing(shared); len(missing) > 0 {
					t.Fatalf("operations %s shares with this API that this test did not prove:\n%v", name, missing)
				}
			}
			if oxideCov := covs["Oxide's document"]; oxideCov != nil {
				fromDocument := sharedOperations(oxideCov.checker.Operations(), ours.Operations())
				fromSDK := covs[sdkDocumentName].checker.Operations()
				slices.Sort(fromDocument)
				slices.Sort(fromSDK)
				if !slices.Equal(fromDocument, fromSDK) {
					t.Errorf("sdkOperations must list the operations Oxide's document shares with this API:\n%v\nit lists\n%v", fromDocument, fromSDK)
				}
			}
		})
	}
}

func oxideProjects(t *testing.T, sdk *oxide.Client) {
	t.Helper()
	for _, name := range []oxide.Name{"conformance", "zeta"} {
		if _, err := sdk.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: name, Description: "Oxide's requests"}}); err != nil {
			t.Fatal(err)
		}
	}
	one := 1
	for sort, first := range map[oxide.NameOrIdSortMode]oxide.Name{
		oxide.NameOrIdSortModeNameAscending: "conformance", oxide.NameOrIdSortModeNameDescending: "zeta", oxide.NameOrIdSortModeIdAscending: "",
	} {
		all, err := sdk.ProjectListAllPages(ctx, oxide.ProjectListParams{Limit: &one, SortBy: sort})
		if err != nil || len(all) != 2 || first != "" && all[0].Name != first || all[0].Name == all[1].Name {
			t.Fatalf("projects by %s, a page of one at a time: %+v, %v; want both, %q first", sort, all, err, first)
		}
	}
	created, err := sdk.ProjectView(ctx, oxide.ProjectViewParams{Project: "conformance"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sdk.ProjectView(ctx, oxide.ProjectViewParams{Project: oxide.NameOrId(created.Id)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sdk.ProjectView(ctx, oxide.ProjectViewParams{Project: "nowhere"}); !errors.Is(err, oxide.ErrObjectNotFound) {
		t.Fatalf("an unknown project: %v, want ObjectNotFound", err)
	}
	if _, err := sdk.ProjectUpdate(ctx, oxide.ProjectUpdateParams{Project: "conformance",
		Body: &oxide.ProjectUpdate{Description: "updated"}}); err != nil {
		t.Fatal(err)
	}
	if err := sdk.ProjectDelete(ctx, oxide.ProjectDeleteParams{Project: "zeta"}); err != nil {
		t.Fatal(err)
	}
}

// oxideInstances takes an instance through its life, and lists instances
// in each of Oxide's sort orders; its hostname starts with a digit, as
// Oxide's allows.
func oxideInstances(t *testing.T, sdk *oxide.Client) {
	t.Helper()
	stopped, started := false, true
	for name, start := range map[oxide.Name]*bool{"web-1": &stopped, "db-2": &started} {
		if _, err := sdk.InstanceCreate(ctx, oxide.InstanceCreateParams{Project: "conformance", Body: &oxide.InstanceCreate{
			Name: name, Description: "", Hostname: oxide.Hostname("1st-" + name), Memory: 4 << 30, Ncpus: 2, Start: start,
			AutoRestartPolicy: oxide.InstanceAutoRestartPolicyNever}}); err != nil {
			t.Fatalf("creating %s: %v", name, err)
		}
	}
	for sort, first := range map[oxide.NameOrIdSortMode]oxide.Name{
		oxide.NameOrIdSortModeNameAscending: "db-2", oxide.NameOrIdSortModeNameDescending: "web-1", oxide.NameOrIdSortModeIdAscending: "",
	} {
		one := 1
		all, err := sdk.InstanceListAllPages(ctx, oxide.InstanceListParams{Project: "conformance", Limit: &one, SortBy: sort})
		if err != nil || len(all) != 2 || first != "" && all[0].Name != first || all[0].Name == all[1].Name {
			t.Fatalf("instances by %s: %+v, %v; want both, %q first", sort, all, err, first)
		}
	}
	web, err := sdk.InstanceView(ctx, oxide.InstanceViewParams{Project: "conformance", Instance: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sdk.InstanceView(ctx, oxide.InstanceViewParams{Instance: oxide.NameOrId(web.Id)}); err != nil {
		t.Fatal(err)
	}
	jumbo := false
	if _, err := sdk.InstanceUpdate(ctx, oxide.InstanceUpdateParams{Project: "conformance", Instance: "web-1",
		Body: &oxide.InstanceUpdate{Ncpus: 4, Memory: 8 << 30, EnableJumboFrames: &jumbo}}); err != nil {
		t.Fatal(err)
	}
	web1 := oxide.NameOrId("web-1")
	if _, err := sdk.InstanceStart(ctx, oxide.InstanceStartParams{Project: "conformance", Instance: web1}); err != nil {
		t.Fatal(err)
	}
	waitRunState(t, sdk, "conformance", "web-1", oxide.InstanceStateRunning)
	if _, err := sdk.InstanceReboot(ctx, oxide.InstanceRebootParams{Project: "conformance", Instance: web1}); err != nil {
		t.Fatal(err)
	}
	waitRunState(t, sdk, "conformance", "web-1", oxide.InstanceStateRunning)
	for _, name := range []oxide.NameOrId{"web-1", "db-2"} {
		waitRunState(t, sdk, "conformance", string(name), oxide.InstanceStateRunning)
		if _, err := sdk.InstanceStop(ctx, oxide.InstanceStopParams{Project: "conformance", Instance: name}); err != nil {
			t.Fatal(err)
		}
		waitRunState(t, sdk, "conformance", string(name), oxide.InstanceStateStopped)
		if err := sdk.InstanceDelete(ctx, oxide.InstanceDeleteParams{Project: "conformance", Instance: name}); err != nil {
			t.Fatal(err)
		}
	}
}

// oxideSleds lists the sleds and the instances on one.
func oxideSleds(t *testing.T, sdk *oxide.Client, sled string) {
	t.Helper()
	if _, err := sdk.SledListAllPages(ctx, oxide.SledListParams{SortBy: oxide.IdSortModeIdAscending}); err != nil {
		t.Fatal(err)
	}
	if _, err := sdk.SledView(ctx, oxide.SledViewParams{SledId: sled}); err != nil {
		t.Fatal(err)
	}
	if _, err := sdk.SledInstanceListAllPages(ctx, oxide.SledInstanceListParams{SledId: sled, SortBy: oxide.IdSortModeIdAscending}); err != nil {
		t.Fatal(err)
	}
}

// oxideTokens reads the caller, and has a principal list and revoke its
// own token (minted through this product's extension, which Oxide's
// document does not have).
func oxideTokens(t *testing.T, sdk *oxide.Client, admin *racktest.Client, through func(*racktest.Client) *racktest.Client, url string) {
	t.Helper()
	if _, err := sdk.CurrentUserView(ctx); err != nil {
		t.Fatal(err)
	}
	erin := through(racktest.NewClient(url, mint(t, admin, "erin", "conformance").Token)).SDK(t)
	if _, err := erin.CurrentUserView(ctx); err != nil {
		t.Fatal(err)
	}
	mine, err := erin.CurrentUserAccessTokenListAllPages(ctx, oxide.CurrentUserAccessTokenListParams{SortBy: oxide.IdSortModeIdAscending})
	if err != nil || len(mine) != 1 {
		t.Fatalf("erin's tokens: %+v, %v", mine, err)
	}
	if err := erin.CurrentUserAccessTokenDelete(ctx, oxide.CurrentUserAccessTokenDeleteParams{TokenId: mine[0].Id}); err != nil {
		t.Fatal(err)
	}
}
