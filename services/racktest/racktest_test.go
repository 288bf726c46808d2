package racktest_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

// The harness's controls do what they say on both backends: a rack runs an
// instance, survives its members' restarts (kill -9 and SIGSTOP where
// they are real), and answers each role as N10 says.
func TestTheRackHarnessControlsEveryMemberEitherWay(t *testing.T) {
	for _, kind := range racktest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			r := racktest.Start(t, kind, racktest.Options{Sleds: 1})
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name": "p", "description": ""}`, http.StatusCreated)
			admin.MustCall(t, http.MethodPost, "/v1/instances?project=p",
				`{"name": "vm", "description": "", "hostname": "vm", "ncpus": 1, "memory": 1073741824}`, http.StatusCreated)
			waitRunning := func() {
				t.Helper()
				testutil.WaitFor(t, 30*time.Second, func() error {
					var inst struct {
						RunState string `json:"run_state"`
					}
					resp, err := admin.Do(context.Background(), http.MethodGet, "/v1/instances/vm?project=p", "")
					if err == nil {
						err = resp.JSON(&inst)
					}
					if err == nil && inst.RunState != "running" {
						err = fmt.Errorf("instance is %s", inst.RunState)
					}
					return err
				})
			}
			waitRunning()
			if got := len(r.Sled(0).Agent().Inventory().GetVmms()); got != 1 {
				t.Fatalf("%d VMMs on the sled, want 1", got)
			}
			viewer := r.Client(racktest.Viewer("p"))
			viewer.MustCall(t, http.MethodGet, "/v1/instances/vm?project=p", "", http.StatusOK)
			viewer.MustCall(t, http.MethodPost, "/v1/instances/vm/stop?project=p", "", http.StatusForbidden)

			r.Nexus(0).Restart()
			waitRunning()
			if kind == racktest.ProcessesKind {
				r.Nexus(0).Kill()
				r.Nexus(0).Restart()
				r.Sled(0).Pause()
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				_, err := r.Sled(0).Agent().Client.GetInventory(ctx, &sledagentv1.GetInventoryRequest{})
				cancel()
				if err == nil {
					t.Fatal("a paused sled-agent answered")
				}
				r.Sled(0).Resume()
			}
			waitRunning()
			r.Sled(0).Restart()
			// A restarted sled-agent forgets its VMMs (V7): the watcher
			// finds out in its own time; the harness's part is that the
			// agent is back and registered on its address.
			if got := r.Sled(0).Agent().Inventory().GetSledId(); got != r.Sled(0).ID().String() {
				t.Fatalf("the restarted sled-agent is sled %s, want %s", got, r.Sled(0).ID())
			}
		})
	}
}

// Several replicas share one PostgreSQL database: each serves the API, and
// the sleds spread over them for their registration and publications.
func TestARackOfSeveralReplicasServesTheAPIFromEach(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Backend: datastore.Postgres, Nexuses: 2, Sleds: 2})
	admin := r.Client(racktest.FleetAdmin)
	admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name": "shared", "description": ""}`, http.StatusCreated)
	for _, n := range r.Nexuses() {
		resp := racktest.NewClient(n.ExternalURL(), admin.Token).MustCall(t, http.MethodGet, "/v1/system/hardware/sleds", "", http.StatusOK)
		var page struct {
			Items []struct{ ID string } `json:"items"`
		}
		if err := resp.JSON(&page); err != nil || len(page.Items) != 2 {
			t.Fatalf("%s lists %d sleds (%v), want 2", n.Name(), len(page.Items), err)
		}
		racktest.NewClient(n.ExternalURL(), admin.Token).MustCall(t, http.MethodGet, "/v1/projects/shared", "", http.StatusOK)
	}
}
