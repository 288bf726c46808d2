package nexus_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/gateway"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/racktest/openapicheck"
)

// coverage records which operations of a document the exchanges through
// it went to, and with which statuses. Whether each exchange agrees with
// the document is racktest's to check (every client of a test binary).
type coverage struct {
	checker *openapicheck.Checker
	mu      sync.Mutex
	seen    map[string][]int
	// problems are the exchanges that disagree with this document, for a
	// document racktest does not check (Oxide's).
	problems []openapicheck.Exchange
}

func newCoverage(t *testing.T, document []byte, opts ...openapicheck.Option) *coverage {
	t.Helper()
	c, err := openapicheck.New(document, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return &coverage{checker: c, seen: map[string][]int{}}
}

// through is the client with its exchanges recorded.
func (c *coverage) through(client *racktest.Client) *racktest.Client {
	return client.Through(func(base http.RoundTripper) http.RoundTripper {
		return c.checker.Transport(base, func(_ context.Context, e openapicheck.Exchange) {
			c.mu.Lock()
			defer c.mu.Unlock()
			if op := e.Operation(); op != "" {
				c.seen[op] = append(c.seen[op], e.Status)
			}
			if len(e.Problems) > 0 {
				c.problems = append(c.problems, e)
			}
		})
	})
}

// missing lists the operations of ops no exchange went to, and of the
// others those that never succeeded.
func (c *coverage) missing(ops []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, op := range ops {
		statuses, ok := c.seen[op]
		switch {
		case !ok:
			out = append(out, op+": never called")
		case !slices.ContainsFunc(statuses, func(s int) bool { return s/100 == 2 }):
			out = append(out, fmt.Sprintf("%s: never succeeded (%v)", op, statuses))
		}
	}
	return out
}

// N15: every route of the served OpenAPI document, called on both backends
// with a success and, where cheap, an error, answers as the document says
// (racktest holds every exchange to it); a route the document has and this
// test never called fails it, so a new route needs a call here.
func TestN15_EveryRouteAnswersAsTheOpenAPIDocumentSays(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r, ntp := zonedRack(t, backend, 1, 2)
			cov := newCoverage(t, gateway.OpenAPI)
			admin := cov.through(r.Client(racktest.FleetAdmin))
			anonymous := cov.through(racktest.NewClient(r.Nexus(0).ExternalURL(), ""))

			anonymous.MustCall(t, http.MethodGet, "/openapi.json", "", http.StatusOK)
			anonymous.MustCall(t, http.MethodGet, "/v1/projects", "", http.StatusUnauthorized)
			callProjects(t, admin)
			callInstances(t, admin, r)
			callSleds(t, admin, r)
			callTokens(t, admin, r, cov)
			callOperatorViews(t, admin, r.Sled(1).ID().String(), ntp[1].String())
			admin.MustCall(t, http.MethodDelete, "/v1/projects/demo", "", http.StatusNoContent)
			admin.MustCall(t, http.MethodDelete, "/v1/projects/demo", "", http.StatusNotFound)

			if missing := cov.missing(cov.checker.Operations()); len(missing) > 0 {
				t.Fatalf("routes of the OpenAPI document this test did not prove:\n%v", missing)
			}
		})
	}
}

func callProjects(t *testing.T, admin *racktest.Client) {
	t.Helper()
	admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":"first"}`, http.StatusCreated)
	admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":"again"}`, http.StatusBadRequest)
	for _, sort := range []string{"name_ascending", "name_descending", "id_ascending"} {
		admin.MustCall(t, http.MethodGet, "/v1/projects?limit=1&sort_by="+sort, "", http.StatusOK)
	}
	admin.MustCall(t, http.MethodGet, "/v1/projects?sort_by=size", "", http.StatusBadRequest)
	admin.MustCall(t, http.MethodGet, "/v1/projects/demo", "", http.StatusOK)
	admin.MustCall(t, http.MethodGet, "/v1/projects/nowhere", "", http.StatusNotFound)
	admin.MustCall(t, http.MethodPut, "/v1/projects/demo", `{"description":"second"}`, http.StatusOK)
	admin.MustCall(t, http.MethodPut, "/v1/projects/demo", `{"name":"Not_A_Name"}`, http.StatusBadRequest)
}

// callInstances takes an instance through its life: create, update,
// start, migrate, reboot, stop, force-terminate and delete.
func callInstances(t *testing.T, admin *racktest.Client, r *racktest.InProcess) {
	t.Helper()
	const vm = "/v1/instances/vm?project=demo"
	admin.MustCall(t, http.MethodPost, "/v1/instances?project=demo",
		`{"name":"vm","description":"","hostname":"vm","memory":4294967296,"ncpus":2,"start":false}`, http.StatusCreated)
	admin.MustCall(t, http.MethodPost, "/v1/instances?project=demo",
		`{"name":"vm2","description":"","hostname":"-","memory":4294967296,"ncpus":2}`, http.StatusBadRequest)
	for _, sort := range []string{"name_ascending", "name_descending", "id_ascending"} {
		admin.MustCall(t, http.MethodGet, "/v1/instances?project=demo&sort_by="+sort, "", http.StatusOK)
	}
	admin.MustCall(t, http.MethodGet, "/v1/instances", "", http.StatusBadRequest)
	admin.MustCall(t, http.MethodGet, vm, "", http.StatusOK)
	admin.MustCall(t, http.MethodPut, vm, `{"ncpus":2,"memory":4294967296,"auto_restart_policy":"never"}`, http.StatusOK)
	admin.MustCall(t, http.MethodPut, vm, `{"ncpus":0,"memory":4294967296}`, http.StatusBadRequest)

	admin.MustCall(t, http.MethodPost, "/v1/instances/vm/start?project=demo", "", http.StatusAccepted)
	waitState(t, admin, vm, "running")
	admin.MustCall(t, http.MethodPut, vm, `{"ncpus":4,"memory":4294967296}`, http.StatusBadRequest, http.StatusConflict)
	admin.MustCall(t, http.MethodDelete, vm, "", http.StatusBadRequest, http.StatusConflict)
	admin.MustCall(t, http.MethodPost, "/v1/instances/vm/migrate?project=demo",
		fmt.Sprintf(`{"dst_sled_id":%q}`, sledWithout(t, admin, r, "vm")), http.StatusOK)
	admin.MustCall(t, http.MethodPost, "/v1/instances/vm/migrate?project=demo", `{"dst_sled_id":"nowhere"}`, http.StatusBadRequest)
	waitState(t, admin, vm, "running")
	admin.MustCall(t, http.MethodPost, "/v1/instances/vm/reboot?project=demo", "", http.StatusAccepted)
	waitState(t, admin, vm, "running")
	admin.MustCall(t, http.MethodPost, "/v1/instances/vm/stop?project=demo", "", http.StatusAccepted)
	waitState(t, admin, vm, "stopped")
	admin.MustCall(t, http.MethodPost, "/v1/instances/vm/reboot?project=demo", "", http.StatusBadRequest, http.StatusConflict)
	admin.MustCall(t, http.MethodPost, "/v1/instances/vm/force-terminate?project=demo", "", http.StatusOK)
	admin.MustCall(t, http.MethodPost, "/v1/instances/gone/force-terminate?project=demo", "", http.StatusNotFound)
	admin.MustCall(t, http.MethodPost, "/v1/instances/gone/start?project=demo", "", http.StatusNotFound)
	admin.MustCall(t, http.MethodPost, "/v1/instances/gone/stop?project=demo", "", http.StatusNotFound)
	admin.MustCall(t, http.MethodDelete, vm, "", http.StatusNoContent)
	admin.MustCall(t, http.MethodGet, vm, "", http.StatusNotFound)
}

// waitState polls the instance at path until its run_state is want.
func waitState(t *testing.T, c *racktest.Client, path, want string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		var inst instanceJSON
		if err := c.MustCall(t, http.MethodGet, path, "", http.StatusOK).JSON(&inst); err != nil {
			return err
		}
		if inst.RunState != want {
			return fmt.Errorf("the instance is %s, waiting for %s", inst.RunState, want)
		}
		return nil
	})
}

// sledWithout returns a sled the named instance has no VMM on, as the
// sleds' instance listings say.
func sledWithout(t *testing.T, admin *racktest.Client, r *racktest.InProcess, name string) string {
	t.Helper()
	type named struct {
		Name string `json:"name"`
	}
	for _, s := range r.Sleds() {
		var page struct {
			Items []named `json:"items"`
		}
		id := s.ID().String()
		if err := admin.MustCall(t, http.MethodGet, "/v1/system/hardware/sleds/"+id+"/instances", "", http.StatusOK).JSON(&page); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(page.Items, named{Name: name}) {
			return id
		}
	}
	t.Fatalf("instance %s is on every sled", name)
	return ""
}

func callSleds(t *testing.T, admin *racktest.Client, r *racktest.InProcess) {
	t.Helper()
	sled := r.Sled(0).ID().String()
	admin.MustCall(t, http.MethodGet, "/v1/system/hardware/sleds?sort_by=id_ascending", "", http.StatusOK)
	admin.MustCall(t, http.MethodGet, "/v1/system/hardware/sleds?sort_by=name_ascending", "", http.StatusBadRequest)
	admin.MustCall(t, http.MethodGet, "/v1/system/hardware/sleds/"+sled, "", http.StatusOK)
	admin.MustCall(t, http.MethodGet, "/v1/system/hardware/sleds/not-an-id", "", http.StatusBadRequest)
	admin.MustCall(t, http.MethodGet, "/v1/system/hardware/sleds/"+sled+"/instances", "", http.StatusOK)
	admin.MustCall(t, http.MethodGet, "/v1/system/hardware/sleds/not-an-id/zones", "", http.StatusBadRequest)
}

func callTokens(t *testing.T, admin *racktest.Client, r *racktest.InProcess, cov *coverage) {
	t.Helper()
	admin.MustCall(t, http.MethodGet, "/v1/me", "", http.StatusOK)
	admin.MustCall(t, http.MethodGet, "/v1/me/access-tokens?sort_by=id_ascending", "", http.StatusOK)
	admin.MustCall(t, http.MethodGet, "/v1/system/access-tokens", "", http.StatusOK)
	admin.MustCall(t, http.MethodPost, "/v1/system/access-tokens", `{"principal":"dave","roles":[]}`, http.StatusBadRequest)
	carol := cov.through(racktest.NewClient(r.Nexus(0).ExternalURL(), mint(t, admin, "carol", "demo").Token))
	dave := mint(t, admin, "dave", "demo")
	var mine struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	if err := carol.MustCall(t, http.MethodGet, "/v1/me/access-tokens", "", http.StatusOK).JSON(&mine); err != nil || len(mine.Items) != 1 {
		t.Fatalf("carol's tokens: %+v, %v", mine, err)
	}
	carol.MustCall(t, http.MethodDelete, "/v1/me/access-tokens/"+dave.ID, "", http.StatusNotFound)
	carol.MustCall(t, http.MethodDelete, "/v1/me/access-tokens/"+mine.Items[0].ID, "", http.StatusNoContent)
	admin.MustCall(t, http.MethodDelete, "/v1/system/access-tokens/"+dave.ID, "", http.StatusNoContent)
	admin.MustCall(t, http.MethodDelete, "/v1/system/access-tokens/"+dave.ID, "", http.StatusNotFound)
}

type minted struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// mint makes a token for a viewer of project.
func mint(t *testing.T, admin *racktest.Client, principal, project string) minted {
	t.Helper()
	var m minted
	body := fmt.Sprintf(`{"principal":%q,"roles":[{"role":"viewer","project":%q}],"expires_in_seconds":3600}`, principal, project)
	if err := admin.MustCall(t, http.MethodPost, "/v1/system/access-tokens", body, http.StatusCreated).JSON(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// callOperatorViews reads the operator's views of sagas, locks, replicas
// and a sled's zones, and expunges one of its zones.
func callOperatorViews(t *testing.T, admin *racktest.Client, sled, zone string) {
	t.Helper()
	for _, path := range []string{"/v1/system/sagas/stuck", "/v1/system/sagas", "/v1/system/updater-locks",
		"/v1/system/nexus-replicas", "/v1/system/hardware/sleds/" + sled + "/zones"} {
		admin.MustCall(t, http.MethodGet, path, "", http.StatusOK)
	}
	zones := "/v1/system/hardware/sleds/" + sled + "/zones/"
	admin.MustCall(t, http.MethodPost, zones+zone+"/expunge", "", http.StatusOK)
	admin.MustCall(t, http.MethodPost, zones+uuid.NewString()+"/expunge", "", http.StatusNotFound)
}
