package racksetup_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

// Z11, X2: a rack of three sleds set up from a plan runs three nexus
// replicas as zones of its sleds (the process zone runtime, Z10), each
// recorded with its sled and serving the API: an instance lives its whole
// life through each replica.
func TestZ11_ARackSetUpFromAPlanRunsItsReplicasAsZonesAndEachServes(t *testing.T) {
	for _, kind := range racktest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			r := racktest.Start(t, kind, racktest.Options{Backend: datastore.Postgres, Nexuses: 3, Sleds: 3, ZoneRuntime: "process"})
			replicas, err := r.DataStore().NexusZoneList(context.Background())
			if err != nil || len(replicas) != 3 {
				t.Fatalf("nexus_zone rows %+v (%v), want 3", replicas, err)
			}
			onSled := map[string]bool{}
			for _, n := range replicas {
				if n.State != model.NexusActive {
					t.Errorf("replica %s is %s, want active", n.ID, n.State)
				}
				onSled[n.SledID.String()] = true
			}
			if len(onSled) != 3 {
				t.Errorf("the replicas run on %d sleds, want one each on 3", len(onSled))
			}
			token := r.Token(racktest.FleetAdmin)
			racktest.NewClient(r.Nexus(0).ExternalURL(), token).MustCall(t, http.MethodPost, "/v1/projects",
				`{"name": "p", "description": ""}`, http.StatusCreated)
			for i, n := range r.Nexuses() {
				api := racktest.NewClient(n.ExternalURL(), token)
				name := fmt.Sprintf("vm-%d", i)
				api.MustCall(t, http.MethodPost, "/v1/instances?project=p", fmt.Sprintf(
					`{"name": %q, "description": "", "hostname": %q, "ncpus": 1, "memory": 1073741824}`, name, name), http.StatusCreated)
				waitRunState(t, api, name, "running")
				api.MustCall(t, http.MethodPost, "/v1/instances/"+name+"/stop?project=p", "", http.StatusAccepted)
				waitRunState(t, api, name, "stopped")
				api.MustCall(t, http.MethodDelete, "/v1/instances/"+name+"?project=p", "", http.StatusNoContent)
				api.MustCall(t, http.MethodGet, "/v1/instances/"+name+"?project=p", "", http.StatusNotFound)
			}
		})
	}
}

func waitRunState(t *testing.T, api *racktest.Client, name, want string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, func() error {
		var inst struct {
			RunState string `json:"run_state"`
		}
		resp, err := api.Do(context.Background(), http.MethodGet, "/v1/instances/"+name+"?project=p", "")
		if err == nil {
			err = resp.JSON(&inst)
		}
		if err == nil && inst.RunState != want {
			err = fmt.Errorf("%s is %s, waiting for %s", name, inst.RunState, want)
		}
		return err
	})
}
