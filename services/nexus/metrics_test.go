package nexus_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/racktest"
)

// scrape reads n's /metrics as Prometheus does.
func scrape(t *testing.T, n *nexus.Server) racktest.Metrics {
	t.Helper()
	m, err := racktest.ScrapeMetrics(ctx, n.MetricsURL())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sample is the sum of family name's metrics whose labels include want.
func sample(m racktest.Metrics, name string, want map[string]string) (float64, bool) {
	return m.Sum(name, want)
}

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestN11_MetricsCountRequestsByRouteAndCodeAndSagasByOutcome(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1)
			n := r.Server()
			admin := r.Token(racktest.FleetAdmin)
			base := n.ExternalURL()
			for _, call := range []struct {
				token, path string
				want        int
			}{
				{admin, "/v1/projects", http.StatusOK},
				{admin, "/v1/projects/no-such-project", http.StatusNotFound},
				{"", "/v1/projects", http.StatusUnauthorized},
				{admin, "/v1/no/such/route", http.StatusNotFound},
			} {
				if resp := racktest.NewClient("", call.token).Call(t, http.MethodGet, base+call.path, ""); resp.Status != call.want {
					t.Fatalf("GET %s: %d, want %d: %s", call.path, resp.Status, call.want, resp.Body)
				}
			}
			c := racktest.NewClient(n.ExternalURL(), admin).SDK(t)
			if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
				t.Fatal(err)
			}
			createInstance(t, c, "p", "vm", false)
			if _, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"}); err != nil {
				t.Fatal(err)
			}
			waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)

			// The sled-agent's first heartbeat may still be on its way.
			var got map[string]*dto.MetricFamily
			testutil.WaitFor(t, 10*time.Second, func() error {
				got = scrape(t, n)
				heartbeat := labels("service", "omicron.nexus.v1.NexusInternal", "method", "SledHeartbeat", "code", "OK")
				if _, ok := sample(got, "nexus_grpc_requests_total", heartbeat); !ok {
					return errors.New("no sled-agent heartbeat yet")
				}
				return nil
			})
			exact := []struct {
				name   string
				labels map[string]string
				want   float64
			}{
				// REST, by route pattern and status.
				{"nexus_http_requests_total", labels("method", "GET", "route", "/v1/projects", "code", "200"), 1},
				{"nexus_http_requests_total", labels("method", "GET", "route", "/v1/projects", "code", "401"), 1},
				{"nexus_http_requests_total", labels("method", "GET", "route", "/v1/projects/{project}", "code", "404"), 1},
				{"nexus_http_requests_total", labels("method", "GET", "route", "unmatched", "code", "404"), 1},
				{"nexus_http_requests_total", labels("method", "POST", "route", "/v1/projects", "code", "201"), 1},
				{"nexus_http_requests_total", labels("method", "POST", "route", "/v1/instances/{instance}/start", "code", "202"), 1},
				{"nexus_http_request_duration_seconds", labels("method", "GET", "route", "/v1/projects"), 2},
				// gRPC behind the gateway: the refused call counts too.
				{"nexus_grpc_requests_total", labels("service", "omicron.nexus.v1.NexusExternal", "method", "ProjectList", "code", "OK"), 1},
				{"nexus_grpc_requests_total", labels("service", "omicron.nexus.v1.NexusExternal", "method", "ProjectList", "code", "Unauthenticated"), 1},
				{"nexus_grpc_requests_total", labels("service", "omicron.nexus.v1.NexusExternal", "method", "ProjectView", "code", "NotFound"), 1},
				{"nexus_grpc_requests_total", labels("service", "omicron.nexus.v1.NexusExternal", "method", "InstanceStart", "code", "OK"), 1},
				{"nexus_grpc_request_duration_seconds", labels("service", "omicron.nexus.v1.NexusExternal", "method", "ProjectList"), 2},
				// Sagas: nothing stuck, in this engine or in the database.
				{"nexus_sagas_total", labels("outcome", "stuck"), 0},
				{"nexus_sagas_stuck", nil, 0},
			}
			for _, e := range exact {
				if v, ok := sample(got, e.name, e.labels); !ok || v != e.want {
					t.Errorf("%s%v = %v (present %v), want %v", e.name, e.labels, v, ok, e.want)
				}
			}
			atLeast := []struct {
				name   string
				labels map[string]string
				min    float64
			}{
				// The sled-agent's calls to the internal API.
				{"nexus_grpc_requests_total", labels("service", "omicron.nexus.v1.NexusInternal", "method", "RegisterSled", "code", "OK"), 1},
				{"nexus_grpc_requests_total", labels("service", "omicron.nexus.v1.NexusInternal", "method", "SledHeartbeat", "code", "OK"), 1},
				{"nexus_grpc_requests_total", labels("service", "omicron.nexus.v1.NexusInternal", "method", "VmmStateUpdate", "code", "OK"), 1},
				// The start saga ran to its end on the real sled-agent.
				{"nexus_sagas_total", labels("outcome", "started"), 1},
				{"nexus_sagas_total", labels("outcome", "done"), 1},
				{"nexus_sagas_running", nil, 0},
				{"nexus_sagas_total", labels("outcome", "recovered"), 0},
				{"nexus_sagas_total", labels("outcome", "unwound"), 0},
				// The standard collectors.
				{"go_goroutines", nil, 1},
				{"process_cpu_seconds_total", nil, 0},
			}
			for _, e := range atLeast {
				if v, ok := sample(got, e.name, e.labels); !ok || v < e.min {
					t.Errorf("%s%v = %v (present %v), want at least %v", e.name, e.labels, v, ok, e.min)
				}
			}
			// Raw paths never become label values.
			for _, m := range got["nexus_http_requests_total"].GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "route" && (strings.Contains(l.GetValue(), "no-such") || strings.Contains(l.GetValue(), "/vm")) {
						t.Errorf("route label %q is a raw path", l.GetValue())
					}
				}
			}
			// Declared for force-terminate: already in this replica's registry.
			var already prometheus.AlreadyRegisteredError
			if err := n.Metrics().Registry().Register(n.Metrics().ForceTerminations); !errors.As(err, &already) {
				t.Errorf("nexus_instance_force_terminate_total is not registered: %v", err)
			}

			// Each replica has its own registry: another nexus in this
			// process has served nothing yet.
			other := scrape(t, racktest.StartInProcess(t, racktest.Options{Backend: backend}).Server())
			if _, ok := other["nexus_http_requests_total"]; ok {
				t.Error("a second nexus in the same process reports the first one's requests")
			}
		})
	}
}

func TestN11_MetricsAreNotServedOnTheExternalListener(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Backend: racktest.Backends[0]})
	n := r.Server()
	admin := r.Token(racktest.FleetAdmin)
	if resp := racktest.NewClient("", "").Call(t, http.MethodGet, n.MetricsURL()+"/metrics", ""); resp.Status != http.StatusOK {
		t.Fatalf("metrics listener: %d, want 200 without a token", resp.Status)
	}
	if resp := racktest.NewClient("", admin).Call(t, http.MethodGet, n.ExternalURL()+"/metrics", ""); resp.Status != http.StatusNotFound ||
		strings.Contains(string(resp.Body), "nexus_http_requests_total") {
		t.Fatalf("external listener /metrics: %d %s, want 404", resp.Status, resp.Body)
	}
	if resp := racktest.NewClient("", "").Call(t, http.MethodGet, n.MetricsURL()+"/v1/projects", ""); resp.Status != http.StatusNotFound {
		t.Fatalf("the metrics listener answers the REST API: %d", resp.Status)
	}
}

// TestN11_EveryBackgroundPassIsTimedAndSizedInMetrics: each pass of a
// background task reports how long it took and how much it looked at, so
// an operator sees a pass grow with the rack (SPEC 6).
func TestN11_EveryBackgroundPassIsTimedAndSizedInMetrics(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Backend: racktest.Backends[0], Sleds: 2})
	n := r.Server()
	c := r.Client(racktest.FleetAdmin).SDK(t)
	if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c"} {
		createInstance(t, c, "p", name, true)
		waitRunState(t, c, "p", name, oxide.InstanceStateRunning)
	}
	for _, e := range []struct {
		task  string
		items float64
	}{
		{nexus.TaskInstanceWatcher, 3}, // VMMs asked
		{nexus.TaskInventory, 2},       // sleds asked
		{nexus.TaskSledLiveness, 2},    // sleds checked
		{nexus.TaskInstanceUpdater, 0}, // nothing stale
	} {
		before, _ := sample(scrape(t, n), "nexus_background_task_duration_seconds", labels("task", e.task))
		activate(t, n, e.task)
		m := scrape(t, n)
		if after, _ := sample(m, "nexus_background_task_duration_seconds", labels("task", e.task)); after < before+1 {
			t.Errorf("%s: %v passes timed after an activation, %v before", e.task, after, before)
		}
		if items, ok := sample(m, "nexus_background_task_last_items", labels("task", e.task)); !ok || items != e.items {
			t.Errorf("%s: last pass looked at %v items (present %v), want %v", e.task, items, ok, e.items)
		}
		if _, ok := sample(m, "nexus_background_task_last_duration_seconds", labels("task", e.task)); !ok {
			t.Errorf("%s: no last pass duration", e.task)
		}
	}
}
