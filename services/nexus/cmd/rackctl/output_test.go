package main

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/services/racktest"
)

// apiJSON is what the API itself answers at path, decoded.
func apiJSON(t *testing.T, c *racktest.Client, path string) any {
	t.Helper()
	var v any
	if err := c.MustCall(t, http.MethodGet, path, "", http.StatusOK).JSON(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// N9: -o json prints the API's own objects, this product's extensions
// included, and a listing as the API's list shape with every item; the
// tables have the columns an operator reads.
func TestN9_RackctlPrintsTheAPIsObjectsAsJSONAndAsTables(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Sleds: 1, RackSetup: true})
	token := r.Token(racktest.FleetAdmin)
	api := racktest.NewClient(r.Nexus(0).ExternalURL(), token)
	rackctl := newCLI(t, "RACKPLANE_URL="+r.Nexus(0).ExternalURL(), "RACKPLANE_TOKEN="+token)
	rackctl.must("project", "create", "demo", "--description", "the demo project")
	rackctl.must("instance", "create", "demo/web", "--ncpus", "2", "--memory", "2GiB")
	rackctl.must("instance", "create", "demo/db", "--ncpus", "1", "--memory", "1GiB", "--auto-restart-policy", "never")

	for _, c := range []struct {
		args []string
		path string
	}{
		{[]string{"instance", "view", "demo/web"}, "/v1/instances/web?project=demo"},
		{[]string{"instance", "list", "demo"}, "/v1/instances?project=demo"},
		{[]string{"project", "view", "demo"}, "/v1/projects/demo"},
		{[]string{"project", "list"}, "/v1/projects"},
		{[]string{"whoami"}, "/v1/me"},
		{[]string{"replica", "list"}, "/v1/system/nexus-replicas"},
		{[]string{"saga", "list"}, "/v1/system/sagas"},
		{[]string{"updater-lock", "list"}, "/v1/system/updater-locks"},
	} {
		var got any
		rackctl.json(&got, c.args...)
		if want := apiJSON(t, api, c.path); !reflect.DeepEqual(got, want) {
			t.Errorf("rackctl %s -o json:\n %v\nthe API's GET %s:\n %v", strings.Join(c.args, " "), got, c.path, want)
		}
	}
	// What a sled's inventory says of its zones moves with each
	// collection: the same zones, at the same config generation, is what
	// must match.
	sled := r.Sled(0).ID().String()
	var zones, apiZones struct {
		Generation int `json:"generation"`
		Items      []struct {
			ID          string `json:"id"`
			Kind        string `json:"kind"`
			Disposition string `json:"disposition"`
		} `json:"items"`
	}
	rackctl.json(&zones, "zone", "list", sled)
	if err := api.MustCall(t, http.MethodGet, "/v1/system/hardware/sleds/"+sled+"/zones", "", http.StatusOK).JSON(&apiZones); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(zones, apiZones) || len(zones.Items) != 1 || zones.Items[0].ID != r.Nexus(0).ID().String() {
		t.Fatalf("zone list -o json: %+v; the API's: %+v; want the replica's nexus zone", zones, apiZones)
	}
	zoneList := rackctl.must("zone", "list", sled).stdout
	if !strings.HasPrefix(zoneList, "config generation ") {
		t.Fatalf("zone list does not start with where the sled's config stands:\n%s", zoneList)
	}
	_, zoneTable, _ := strings.Cut(zoneList, "\n")
	rows := wantHeader(t, zoneTable, "ID", "KIND", "ADDRESS", "DISPOSITION", "INVENTORY", "CONFIRMED-GONE", "WAITING-FOR")
	if len(rows) != 1 || rows[0][0] != r.Nexus(0).ID().String() || rows[0][1] != "nexus" || rows[0][3] != "in_service" {
		t.Fatalf("zone list rows: %v", rows)
	}

	// A sled's time_last_seen moves with each heartbeat: the same sled,
	// with this product's reachability, is what must match.
	var sleds struct {
		Items []map[string]any `json:"items"`
	}
	rackctl.json(&sleds, "sled", "list")
	if len(sleds.Items) != 1 || sleds.Items[0]["id"] != r.Sled(0).ID().String() || sleds.Items[0]["reachability"] != "reachable" {
		t.Fatalf("sled list -o json: %v", sleds.Items)
	}

	rows = wantHeader(t, rackctl.must("instance", "list", "demo").stdout,
		"NAME", "ID", "STATE", "NCPUS", "MEMORY", "AUTO-RESTART", "SLED", "SINCE")
	web := rackctl.instance("demo/web")
	if len(rows) != 2 || strings.Join(rows[1][:7], " ") != "web "+web.ID+" stopped 2 2 GiB best_effort" ||
		rows[0][0] != "db" || rows[0][6] != "never" {
		t.Fatalf("instance list rows: %v", rows)
	}
	rows = wantHeader(t, rackctl.must("project", "list").stdout, "NAME", "ID", "DESCRIPTION", "CREATED")
	if len(rows) != 1 || rows[0][0] != "demo" || !strings.Contains(strings.Join(rows[0], " "), "the demo project") {
		t.Fatalf("project list rows: %v", rows)
	}
	rows = wantHeader(t, rackctl.must("sled", "list").stdout,
		"ID", "SERIAL", "STATE", "POLICY", "REACHABILITY", "THREADS", "RAM", "LAST-SEEN")
	if len(rows) != 1 || rows[0][0] != r.Sled(0).ID().String() || rows[0][4] != "reachable" {
		t.Fatalf("sled list rows: %v", rows)
	}
	rows = wantHeader(t, rackctl.must("replica", "list").stdout, "ID", "SLED", "API", "STATE", "RUNNING", "UNWINDING",
		"STUCK", "LOCKS", "CONFIRMED-GONE", "REASSIGNED", "WAITING-FOR")
	if len(rows) != 1 || rows[0][0] != r.Nexus(0).ID().String() || rows[0][1] != sled || rows[0][3] != "active" {
		t.Fatalf("replica list rows: %v", rows)
	}
	wantHeader(t, rackctl.must("saga", "list").stdout, "ID", "TEMPLATE", "STATE", "OWNER", "OWNER-STATE", "INSTANCE", "SINCE")
	wantHeader(t, rackctl.must("saga", "stuck").stdout, "ID", "TEMPLATE", "OWNER", "OWNER-STATE", "NODE", "ERROR", "CREATED")
	wantHeader(t, rackctl.must("updater-lock", "list").stdout, "INSTANCE", "ID", "SAGA", "OWNER", "OWNER-STATE", "SINCE")

	// Update changes what it is given and keeps the rest.
	var updated struct {
		Ncpus             int    `json:"ncpus"`
		Memory            int64  `json:"memory"`
		AutoRestartPolicy string `json:"auto_restart_policy"`
	}
	rackctl.json(&updated, "instance", "update", "demo/web", "--ncpus", "4")
	if updated.Ncpus != 4 || updated.Memory != 2<<30 || updated.AutoRestartPolicy != "best_effort" {
		t.Fatalf("update --ncpus 4: %+v, want 4 vCPUs and the rest as it was", updated)
	}
	rackctl.json(&updated, "instance", "update", "demo/web", "--memory", "8GiB", "--auto-restart-policy", "never")
	if updated.Ncpus != 4 || updated.Memory != 8<<30 || updated.AutoRestartPolicy != "never" {
		t.Fatalf("update --memory 8GiB --auto-restart-policy never: %+v", updated)
	}

	// Deleting prints what it did, or nothing as JSON.
	if out := rackctl.must("instance", "delete", "db", "--project", "demo").stdout; out != "deleted instance demo/db\n" {
		t.Fatalf("instance delete printed %q", out)
	}
	if out := rackctl.must("instance", "delete", web.ID, "-o", "json").stdout; out != "" {
		t.Fatalf("instance delete -o json printed %q, want nothing", out)
	}
	var empty struct {
		Items []json.RawMessage `json:"items"`
	}
	rackctl.json(&empty, "instance", "list", "demo")
	if empty.Items == nil || len(empty.Items) != 0 {
		t.Fatalf("an empty listing as JSON: %+v, want items: []", empty)
	}
}

// N9: the API's refusal shows as its Oxide error code, message, status and
// request id, and exits 1; a flag rackctl cannot read is named.
func TestN9_RackctlShowsTheAPIsErrorCodeAndMessageAndExits1(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Sleds: 1})
	rackctl := asAdmin(t, r)
	rackctl.must("project", "create", "demo")

	msg := rackctl.fails("instance", "create", "demo/web", "--ncpus", "0", "--memory", "1GiB")
	if !strings.HasPrefix(msg, "rackctl: InvalidRequest: ") || !strings.Contains(msg, "ncpus: must be between 1 and") ||
		!strings.Contains(msg, "(HTTP 400, request ") {
		t.Fatalf("bad ncpus: %q, want the API's code, message, status and request id", msg)
	}
	if msg := rackctl.fails("instance", "view", "demo/nope"); !strings.HasPrefix(msg, "rackctl: ObjectNotFound: ") ||
		!strings.Contains(msg, "(HTTP 404, request ") {
		t.Fatalf("an unknown instance: %q", msg)
	}
	if msg := rackctl.fails("instance", "force-terminate", "demo/nope"); !strings.HasPrefix(msg, "rackctl: ObjectNotFound: ") {
		t.Fatalf("force-terminating an unknown instance (an extension's error): %q", msg)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"instance", "create", "demo/web", "--memory", "1GB"}, `rackctl: --memory: "1GB" is not a size`},
		{[]string{"instance", "view", "web"}, `rackctl: instance "web": name it PROJECT/web, by id, or with --project`},
		{[]string{"instance", "view", "demo/web", "--project", "other"}, "--project says other"},
		{[]string{"instance", "migrate", "demo/web"}, "rackctl: --to: which sled?"},
		{[]string{"project", "list", "-o", "yaml"}, `rackctl: --output: "yaml" is neither table nor json`},
		{[]string{"token", "create", "--principal", "carol"}, "rackctl: --role: give at least one"},
		{[]string{"token", "create", "--principal", "carol", "--role", "admin", "--expires-in", "1.5s"}, "rackctl: --expires-in: 1.5s"},
	} {
		if msg := rackctl.fails(c.args...); !strings.Contains(msg, c.want) {
			t.Errorf("rackctl %s: %q, want %q", strings.Join(c.args, " "), msg, c.want)
		}
	}
}
