package nexus_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestN9_TheOxideSDKManagesProjects(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			c := racktest.StartInProcess(t, racktest.Options{Backend: backend}).Client(racktest.FleetAdmin).SDK(t)
			created, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "demo", Description: "first"}})
			if err != nil {
				t.Fatal(err)
			}
			if created.Name != "demo" || created.Description != "first" || created.TimeCreated == nil {
				t.Fatalf("created %+v", created)
			}
			for _, ref := range []oxide.NameOrId{"demo", oxide.NameOrId(created.Id)} {
				got, err := c.ProjectView(ctx, oxide.ProjectViewParams{Project: ref})
				if err != nil || got.Id != created.Id {
					t.Fatalf("view %s: %+v, %v", ref, got, err)
				}
			}
			_, err = c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "demo"}})
			if !errors.Is(err, oxide.ErrObjectAlreadyExists) {
				t.Fatalf("duplicate name: %v, want ObjectAlreadyExists", err)
			}
			_, err = c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "Not_A_Name"}})
			var httpErr *oxide.HTTPError
			if !errors.Is(err, oxide.ErrInvalidRequest) || !errors.As(err, &httpErr) ||
				!strings.Contains(httpErr.ErrorResponse.Message, "name") {
				t.Fatalf("bad name: %v, want InvalidRequest naming the field", err)
			}

			for _, name := range []string{"p-3", "p-1", "p-2"} {
				if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: oxide.Name(name)}}); err != nil {
					t.Fatal(err)
				}
			}
			one := 1
			page, err := c.ProjectList(ctx, oxide.ProjectListParams{Limit: &one})
			if err != nil || len(page.Items) != 1 || page.Items[0].Name != "demo" || page.NextPage == "" {
				t.Fatalf("first page of one: %+v, %v", page, err)
			}
			all, err := c.ProjectListAllPages(ctx, oxide.ProjectListParams{Limit: &one})
			if err != nil || len(all) != 4 || all[1].Name != "p-1" || all[3].Name != "p-3" {
				t.Fatalf("all pages: %+v, %v", all, err)
			}

			updated, err := c.ProjectUpdate(ctx, oxide.ProjectUpdateParams{Project: "demo",
				Body: &oxide.ProjectUpdate{Description: "second"}})
			if err != nil || updated.Name != "demo" || updated.Description != "second" {
				t.Fatalf("update: %+v, %v", updated, err)
			}
			if err := c.ProjectDelete(ctx, oxide.ProjectDeleteParams{Project: "demo"}); err != nil {
				t.Fatal(err)
			}
			_, err = c.ProjectView(ctx, oxide.ProjectViewParams{Project: "demo"})
			if !errors.Is(err, oxide.ErrObjectNotFound) || !errors.Is(err, oxide.ErrHTTP404) {
				t.Fatalf("deleted project: %v, want ObjectNotFound", err)
			}
		})
	}
}

func TestN9_TheOxideSDKListsSleds(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Backend: racktest.Backends[0], Sleds: 1, SledConfig: racktest.EverySled(explicitSleds)})
	a := r.Agents()[0]
	c := r.Client(racktest.FleetAdmin).SDK(t)
	testutil.WaitFor(t, 10*time.Second, func() error {
		page, err := c.SledList(ctx, oxide.SledListParams{})
		if err != nil {
			return err
		}
		if len(page.Items) != 1 || page.Items[0].Id != a.Config.SledID ||
			uint64(page.Items[0].UsablePhysicalRam) != a.Config.MemoryGiB<<30 ||
			page.Items[0].Policy.Kind() != oxide.SledPolicyKindInService {
			return errors.New("sled not listed as registered")
		}
		return nil
	})
}

func TestN9_RESTConventions(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Backend: racktest.Backends[0]})
	n := r.Server()
	base := n.ExternalURL()
	admin := r.Token(racktest.FleetAdmin)

	resp := racktest.NewClient("", admin).Call(t, "POST", base+"/v1/projects", `{"name": "web", "description": "", "from_a_newer_client": 1}`)
	if resp.Status != http.StatusCreated {
		t.Fatalf("create with an unknown field: %d %s", resp.Status, resp.Body)
	}
	resp = racktest.NewClient("", admin).Call(t, "POST", base+"/v1/projects", `{"name": `)
	var e racktest.Error
	if err := json.Unmarshal(resp.Body, &e); err != nil || resp.Status != 400 || e.ErrorCode != "InvalidRequest" ||
		e.RequestID == "" || e.RequestID != resp.Header.Get("x-request-id") {
		t.Fatalf("malformed JSON: %d %s (x-request-id %s)", resp.Status, resp.Body, resp.Header.Get("x-request-id"))
	}
	for _, body := range []string{`{"name": "web"}`, `{"name": ""}`} {
		if resp := racktest.NewClient("", admin).Call(t, "POST", base+"/v1/projects", body); resp.Status != 400 {
			t.Fatalf("%s: %d %s", body, resp.Status, resp.Body)
		}
	}
	resp = racktest.NewClient("", admin).Call(t, "GET", base+"/v1/projects?limit=5000", "")
	if resp.Status != 400 || !strings.Contains(string(resp.Body), "limit") {
		t.Fatalf("limit out of range: %d %s", resp.Status, resp.Body)
	}
	resp = racktest.NewClient("", admin).Call(t, "GET", base+"/v1/projects/"+uuid.NewString(), "")
	if json.Unmarshal(resp.Body, &e); resp.Status != 404 || e.ErrorCode != "ObjectNotFound" {
		t.Fatalf("unknown project: %d %s", resp.Status, resp.Body)
	}
	resp = racktest.NewClient("", admin).Call(t, "GET", base+"/v1/no-such-thing", "")
	if json.Unmarshal(resp.Body, &e); resp.Status != 404 || e.ErrorCode != "ObjectNotFound" {
		t.Fatalf("unknown route: %d %s", resp.Status, resp.Body)
	}
	resp = racktest.NewClient("", admin).Call(t, "DELETE", base+"/v1/projects/web", "")
	if resp.Status != http.StatusNoContent || len(resp.Body) != 0 {
		t.Fatalf("delete: %d %q", resp.Status, resp.Body)
	}
	resp = racktest.NewClient("", admin).Call(t, "GET", base+"/openapi.json", "")
	if resp.Status != 200 || !strings.Contains(string(resp.Body), "/v1/projects/{project}") {
		t.Fatalf("openapi: %d %.200s", resp.Status, resp.Body)
	}
}

func TestN9_SixtyFourBitIntegersAreJSONNumbers(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Backend: racktest.Backends[0], Sleds: 1, SledConfig: racktest.EverySled(explicitSleds)})
	n := r.Server()
	admin := r.Token(racktest.FleetAdmin)
	testutil.WaitFor(t, 10*time.Second, func() error {
		data := racktest.NewClient("", admin).Call(t, "GET", n.ExternalURL()+"/v1/system/hardware/sleds", "").Body
		var page struct {
			Items []map[string]any `json:"items"`
		}
		if err := json.Unmarshal(data, &page); err != nil || len(page.Items) != 1 {
			return errors.New("no sled yet")
		}
		if _, isNumber := page.Items[0]["usable_physical_ram"].(float64); !isNumber {
			t.Fatalf("usable_physical_ram is %T in %s", page.Items[0]["usable_physical_ram"], data)
		}
		return nil
	})
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
