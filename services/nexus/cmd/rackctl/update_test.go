package main

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"

	"github.com/rackplane/rackplane/services/racktest"
)

// N15: `rackctl instance update` says "what is not given stays". Another
// operator's change that lands between the instance rackctl read and the
// PUT it sends (every field, as the API takes it) must then either stay or
// make the update fail; rackctl must not silently put back what it read.
func TestN15_RackctlUpdateDoesNotRevertAChangeMadeMeanwhile(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Backend: racktest.Backends[0], Sleds: 1})
	admin := racktest.NewClient(r.Nexus(0).ExternalURL(), r.Token(racktest.FleetAdmin))
	admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
	admin.MustCall(t, http.MethodPost, "/v1/instances?project=demo",
		`{"name":"web","description":"","hostname":"web","memory":1073741824,"ncpus":1,"start":false,"auto_restart_policy":"best_effort"}`,
		http.StatusCreated)

	// The other operator's change lands right after rackctl read the
	// instance, before its answer reaches rackctl.
	nexusURL, err := url.Parse(r.Nexus(0).ExternalURL())
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	proxy := httputil.NewSingleHostReverseProxy(nexusURL)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && resp.Request.URL.Path == "/v1/instances/web" {
			once.Do(func() {
				admin.MustCall(t, http.MethodPut, "/v1/instances/web?project=demo",
					`{"ncpus":1,"memory":1073741824,"auto_restart_policy":"never"}`, http.StatusOK)
			})
		}
		return nil
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)

	rackctl := newCLI(t, "RACKPLANE_URL="+front.URL, "RACKPLANE_TOKEN="+r.Token(racktest.FleetAdmin))
	res := rackctl.run("instance", "update", "demo/web", "--ncpus", "2")
	var got struct {
		Ncpus             int    `json:"ncpus"`
		AutoRestartPolicy string `json:"auto_restart_policy"`
	}
	if err := admin.MustCall(t, http.MethodGet, "/v1/instances/web?project=demo", "", http.StatusOK).JSON(&got); err != nil {
		t.Fatal(err)
	}
	if res.code == 0 && got.AutoRestartPolicy != "never" {
		t.Fatalf("rackctl instance update --ncpus 2 succeeded and the instance is now %+v: the auto-restart policy another "+
			"operator set to never meanwhile was put back to best_effort, though the update did not give it", got)
	}
}
