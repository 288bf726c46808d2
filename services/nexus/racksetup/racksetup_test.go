package racksetup_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/racksetup"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
	"go.uber.org/zap"
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

// Z11: rack setup asks each sled what it is before it records anything: a
// plan that puts a zone on a pool its sled lacks (the sled would refuse its
// config after the rack was set up from it) is refused whole, and the
// database holds no rack.
func TestZ11_APlanThatDoesNotFitItsSledsIsRefusedBeforeItIsRecorded(t *testing.T) {
	agent := sledagenttest.Start(t)
	dbPath := filepath.Join(t.TempDir(), "nexus.db")
	wrongPool := "oxp_" + uuid.NewString()
	plan := racksetup.Plan{Database: racksetup.Database{Backend: "sqlite", URL: dbPath},
		Sleds: []racksetup.Sled{{ID: agent.Config.SledID, Address: agent.Server.Addr(), Zones: []racksetup.Zone{{
			ID: uuid.NewString(), Kind: model.ZoneNexus, Pool: wrongPool, Address: "127.0.0.1:1",
			Nexus: &racksetup.NexusListeners{ExternalAddress: "127.0.0.1:2", MetricsAddress: "127.0.0.1:3"}}}}}}
	_, err := racksetup.Run(context.Background(), plan, racksetup.Options{ReadyBound: 10 * time.Second, Trust: rackpkitest.For(t).Operator()})
	if err == nil || !strings.Contains(err.Error(), "sleds[0].zones[0].pool: "+wrongPool+" is not a pool of sled") {
		t.Fatalf("a zone on a pool its sled lacks: %v, want a refusal naming the pool", err)
	}
	ds, err := datastore.Open(context.Background(), datastore.SQLite, dbPath, zap.NewNop())
	if err == nil {
		defer ds.Close()
		if replicas, _ := ds.NexusZoneList(context.Background()); len(replicas) != 0 {
			t.Fatalf("the refused plan was recorded: %+v", replicas)
		}
	}
}
