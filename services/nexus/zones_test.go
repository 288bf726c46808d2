package nexus_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/racksetup"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	"github.com/rackplane/rackplane/services/nexus/wire"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// zonesBound bounds a wait on a sled's zones: a push, a reconciler pass.
const zonesBound = 20 * time.Second

// zonedRack is an in-process rack set up by rack setup: replica i a nexus
// zone of sled i, and each sled also an internal NTP zone, so that there is
// a zone to expunge besides the replicas. Background tasks run only when a
// test activates them.
func zonedRack(t *testing.T, backend datastore.Backend, nexuses, sleds int) (*racktest.InProcess, []uuid.UUID) {
	t.Helper()
	ntp := make([]uuid.UUID, sleds)
	for i := range ntp {
		ntp[i] = uuid.New()
	}
	r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Nexuses: nexuses, Sleds: sleds,
		RackSetup: true, SledProxies: true,
		PlanZones: func(i int, pools []string) []racksetup.Zone {
			return []racksetup.Zone{{ID: ntp[i].String(), Kind: "internal_ntp", Pool: pools[0], Address: fmt.Sprintf("127.0.1.%d:123", i+1)}}
		},
		NexusConfig: func(_ int, c *nexusconfig.Config) {
			for _, period := range []*duration.Duration{&c.ZonesPushPeriod, &c.InventoryPeriod, &c.ExpungeConfirmPeriod,
				&c.SagaReassignmentPeriod, &c.OrphanVMMPeriod} {
				*period = duration.Duration(time.Hour)
			}
		}})
	return r, ntp
}

// runTasks runs background tasks once each; a task's error (a sled that
// does not answer) is logged, since the test checks what the task did.
func runTasks(t *testing.T, n *nexus.Server, tasks ...string) {
	t.Helper()
	for _, task := range tasks {
		if err := n.Background().Activate(ctx, task); err != nil {
			t.Logf("%s: %v", task, err)
		}
	}
}

// sledZonesView is GET /v1/system/hardware/sleds/{sled}/zones.
type sledZonesView struct {
	Items []struct {
		ID                 uuid.UUID
		Kind               string
		Disposition        string
		ExpungedGeneration *json.Number `json:"expunged_generation"`
		ConfirmedGone      bool         `json:"confirmed_gone"`
		Inventory          string
		WaitingFor         string `json:"waiting_for"`
	}
	Generation           json.Number
	PushedGeneration     json.Number `json:"pushed_generation"`
	PushError            string      `json:"push_error"`
	LedgeredGeneration   json.Number `json:"ledgered_generation"`
	ReconciledGeneration json.Number `json:"reconciled_generation"`
	TimeCollected        *time.Time  `json:"time_inventory_collected"`
}

func sledZones(t *testing.T, c *racktest.Client, sled uuid.UUID) sledZonesView {
	t.Helper()
	var v sledZonesView
	if err := c.MustCall(t, http.MethodGet, "/v1/system/hardware/sleds/"+sled.String()+"/zones", "", http.StatusOK).JSON(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v sledZonesView) zone(t *testing.T, id uuid.UUID) (disposition, inventory, waitingFor string, confirmed bool) {
	t.Helper()
	for _, z := range v.Items {
		if z.ID == id {
			return z.Disposition, z.Inventory, z.WaitingFor, z.ConfirmedGone
		}
	}
	t.Fatalf("zone %s is not listed: %+v", id, v.Items)
	return
}

// Z9: nexus pushes each sled its zones config and records what the sled's
// inventory shows. An expunged zone is confirmed gone only once its sled's
// inventory proves it: not while its shutdown fails, not while nexus cannot
// reach the sled, only when the sled answers, has reconciled the expunging
// generation, and no longer lists the zone.
func TestZ9_AnExpungedZoneIsConfirmedGoneOnlyWhenItsSledsInventoryProvesIt(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r, ntp := zonedRack(t, backend, 1, 2)
			n, admin, sled := r.Server(), r.Client(racktest.FleetAdmin), r.Sled(1)
			runTasks(t, n, nexus.TaskInventory)
			v := sledZones(t, admin, sled.ID())
			if v.Generation != "1" || v.PushedGeneration != "1" || v.LedgeredGeneration != "1" || v.ReconciledGeneration != "1" || v.TimeCollected == nil {
				t.Fatalf("after rack setup sled 1's zones are %+v; want generation 1 pushed, ledgered and reconciled", v)
			}
			if d, inv, _, _ := v.zone(t, ntp[1]); d != "in_service" || inv != "running" {
				t.Fatalf("the NTP zone is %s, %s in inventory; want in_service and running", d, inv)
			}

			// The sled fails every shutdown of the zone: expunged, pushed,
			// still there.
			if _, err := sled.Agent().Sim.FailZoneShutdown(ctx, &sledagentv1.FailZoneShutdownRequest{
				ZoneId: ntp[1].String(), Count: 1 << 30, Message: "the test keeps it up"}); err != nil {
				t.Fatal(err)
			}
			admin.MustCall(t, http.MethodPost, "/v1/system/hardware/sleds/"+sled.ID().String()+"/zones/"+ntp[1].String()+"/expunge", "", http.StatusOK)
			sled.Agent().WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error { return nil })
			runTasks(t, n, nexus.TaskInventory)
			expunged := time.Now()
			v = sledZones(t, admin, sled.ID())
			d, inv, waiting, confirmed := v.zone(t, ntp[1])
			if v.Generation != "2" || v.PushedGeneration != "2" || v.ReconciledGeneration != "2" || d != "expunged" || confirmed ||
				inv != "failing" || !strings.Contains(waiting, "the test keeps it up") {
				t.Fatalf("with its shutdown failing the expunged zone is %s, %s, confirmed %v, waiting for %q (sled at %+v)",
					d, inv, confirmed, waiting, v)
			}
			if got := metric(t, n, "nexus_zones_expunged_unconfirmed"); got != 1 {
				t.Fatalf("nexus_zones_expunged_unconfirmed is %v; want 1", got)
			}

			// The zone goes, but nexus cannot reach the sled: nothing is
			// proved.
			sled.Isolate()
			if _, err := sled.Agent().Sim.ClearZoneFaults(ctx, &sledagentv1.ClearZoneFaultsRequest{}); err != nil {
				t.Fatal(err)
			}
			sled.Agent().WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error { return zoneAbsent(inv, ntp[1]) })
			runTasks(t, n, nexus.TaskInventory)
			if _, _, _, confirmed := sledZones(t, admin, sled.ID()).zone(t, ntp[1]); confirmed {
				t.Fatalf("an expunged zone was confirmed gone while its sled could not be reached")
			}

			// The first calls after the heal may still find the
			// connection in its reconnect backoff.
			sled.Heal()
			testutil.WaitFor(t, zonesBound, func() error {
				runTasks(t, n, nexus.TaskInventory)
				if v = sledZones(t, admin, sled.ID()); v.TimeCollected == nil || !v.TimeCollected.After(expunged) {
					return fmt.Errorf("no inventory of sled 1 since the heal")
				}
				return nil
			})
			if d, inv, waiting, confirmed := v.zone(t, ntp[1]); !confirmed || inv != "absent" || waiting != "" || d != "expunged" {
				t.Fatalf("once its sled answered without it the zone is %s, %s, confirmed %v, waiting for %q", d, inv, confirmed, waiting)
			}
			if got := metric(t, n, "nexus_zones_expunged_unconfirmed"); got != 0 {
				t.Fatalf("nexus_zones_expunged_unconfirmed is %v; want 0", got)
			}
			// The other sled's zones were never touched.
			if v := sledZones(t, admin, r.Sled(0).ID()); v.Generation != "1" {
				t.Fatalf("sled 0's config moved to generation %s", v.Generation)
			}
		})
	}
}

// Z9, bad input: expunging the last active nexus replica, a zone the sled
// does not have, or a malformed id is refused with the field named, and
// changes nothing.
func TestZ9_AnExpungeThatCannotBeIsRefusedAndChangesNothing(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r, ntp := zonedRack(t, backend, 1, 1)
			admin, sled, replica := r.Client(racktest.FleetAdmin), r.Sled(0).ID().String(), r.Nexus(0).ID().String()
			for _, c := range []struct {
				path   string
				status int
				says   string
			}{
				{"/v1/system/hardware/sleds/" + sled + "/zones/" + replica + "/expunge", http.StatusBadRequest, "last active nexus replica"},
				{"/v1/system/hardware/sleds/" + sled + "/zones/" + uuid.NewString() + "/expunge", http.StatusNotFound, "zone"},
				{"/v1/system/hardware/sleds/" + uuid.NewString() + "/zones/" + ntp[0].String() + "/expunge", http.StatusNotFound, "sled"},
				{"/v1/system/hardware/sleds/" + sled + "/zones/not-a-uuid/expunge", http.StatusBadRequest, "zone_id"},
				{"/v1/system/hardware/sleds/not-a-uuid/zones/" + ntp[0].String() + "/expunge", http.StatusBadRequest, "sled_id"},
			} {
				resp := admin.Call(t, http.MethodPost, c.path, "")
				if resp.Status != c.status || !strings.Contains(string(resp.Body), c.says) {
					t.Errorf("POST %s answered %d %s; want %d saying %q", c.path, resp.Status, resp.Body, c.status, c.says)
				}
			}
			// Not a fleet admin: refused.
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name": "p", "description": ""}`, http.StatusCreated)
			if resp := r.Client(racktest.Collaborator("p")).Call(t, http.MethodPost,
				"/v1/system/hardware/sleds/"+sled+"/zones/"+ntp[0].String()+"/expunge", ""); resp.Status != http.StatusForbidden {
				t.Errorf("a collaborator's expunge answered %d %s; want 403", resp.Status, resp.Body)
			}
			v := sledZones(t, admin, r.Sled(0).ID())
			if d, _, _, _ := v.zone(t, ntp[0]); v.Generation != "1" || d != "in_service" {
				t.Fatalf("after refused expunges the sled's config is generation %s, its NTP zone %s", v.Generation, d)
			}
			if d, _, _, _ := v.zone(t, r.Nexus(0).ID()); d != "in_service" {
				t.Fatalf("after refused expunges the replica's zone is %s", d)
			}
		})
	}
}

// X3: a replica that is expunged while it runs refuses its APIs at once
// (503), reports NOT_SERVING, and is not let back in on a restart.
func TestX3_AnExpungedReplicaStopsServingAndIsNotLetBackIn(t *testing.T) {
	r, _ := zonedRack(t, datastore.Postgres, 2, 2)
	a, b := r.InProcessNexus(0), r.InProcessNexus(1)
	viaB := racktest.NewClient(b.ExternalURL(), r.Token(racktest.FleetAdmin))
	viaB.MustCall(t, http.MethodGet, "/v1/projects", "", http.StatusOK)
	r.Client(racktest.FleetAdmin).MustCall(t, http.MethodPost,
		"/v1/system/hardware/sleds/"+r.Sled(1).ID().String()+"/zones/"+b.ID().String()+"/expunge", "", http.StatusOK)
	runTasks(t, b.Server(), nexus.TaskReplicaCheck)
	select {
	case <-b.Server().Expunged():
	case <-time.After(zonesBound):
		t.Fatalf("replica B did not notice its expunge")
	}
	testutil.WaitFor(t, zonesBound, func() error {
		resp, err := viaB.Do(ctx, http.MethodGet, "/v1/projects", "")
		if err == nil && resp.Status != http.StatusServiceUnavailable {
			return fmt.Errorf("B answered %d", resp.Status)
		}
		return nil // 503, or no longer listening
	})
	if err := racktest.Serving(t, b.InternalAddr(), wire.ReplicaHealthService(b.ID())); err == nil {
		t.Fatalf("expunged B reports SERVING")
	}
	if err := racktest.Serving(t, a.InternalAddr(), wire.ReplicaHealthService(a.ID())); err != nil {
		t.Fatalf("A does not serve: %v", err)
	}
	cfg := b.Config()
	cfg.InternalListen, cfg.ExternalListen, cfg.ExternalGRPCListen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if srv, err := nexus.New(ctx, cfg, sledagenttest.TestLogger(t)); err == nil || !strings.Contains(err.Error(), "expunged") {
		if err == nil {
			srv.Shutdown(ctx)
		}
		t.Fatalf("restarting expunged B: %v; want a refusal saying it is expunged", err)
	}
}

// zoneAbsent is nil once a sled's inventory no longer lists the zone.
func zoneAbsent(inv *sledagentv1.GetInventoryResponse, zone uuid.UUID) error {
	for _, z := range inv.GetLastReconciliation().GetZones() {
		if z.GetZoneId() == zone.String() {
			return fmt.Errorf("zone %s is still on sled %s", zone, inv.GetSledId())
		}
	}
	return nil
}

// X4 and X7 in process: an expunged replica's unfinished saga stays its own
// while its zone is not confirmed gone, then moves to the replica whose
// inventory collection confirms it, which runs it to its end. The metrics
// show each step: sagas per owner, the expunged zone unconfirmed, each
// sled's inventory age, and the reassignment counted by the replica that
// did it.
func TestX7_MetricsShowUnconfirmedExpungesSagasPerOwnerAndReassignments(t *testing.T) {
	r, _ := zonedRack(t, datastore.Postgres, 2, 2)
	a, b := r.InProcessNexus(0), r.InProcessNexus(1)
	ds := r.DataStore()
	admin := r.Client(racktest.FleetAdmin)
	admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name": "p", "description": ""}`, http.StatusCreated)
	admin.MustCall(t, http.MethodPost, "/v1/instances?project=p",
		`{"name": "vm", "hostname": "vm", "description": "", "memory": 1073741824, "ncpus": 1, "start": false}`, http.StatusCreated)
	var inst struct{ ID uuid.UUID }
	if err := admin.MustCall(t, http.MethodGet, "/v1/instances/vm?project=p", "", http.StatusOK).JSON(&inst); err != nil {
		t.Fatal(err)
	}
	// B's saga, as a B that died right after creating it would leave it.
	params, _ := json.Marshal(sagas.InstanceUpdateParams{Instance: inst.ID})
	held := saga.Record{ID: uuid.New(), Template: sagas.InstanceUpdate, Params: params, Owner: b.ID(),
		State: saga.StateRunning, TimeCreated: time.Now(), TimeStateChanged: time.Now()}
	if err := ds.SagaCreate(ctx, held); err != nil {
		t.Fatal(err)
	}
	bSaga := fmt.Sprintf(`nexus_replica_sagas{nexus_id=%q,state="running"}`, b.ID())
	if got := metric(t, a.Server(), bSaga); got != 1 {
		t.Fatalf("%s is %v; want 1", bSaga, got)
	}

	if _, err := r.Sled(1).Agent().Sim.FailZoneShutdown(ctx, &sledagentv1.FailZoneShutdownRequest{
		ZoneId: b.ID().String(), Count: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	admin.MustCall(t, http.MethodPost, "/v1/system/hardware/sleds/"+r.Sled(1).ID().String()+"/zones/"+b.ID().String()+"/expunge", "", http.StatusOK)
	r.Sled(1).Agent().WaitReconciled(2, func(*sledagentv1.GetInventoryResponse) error { return nil })
	runTasks(t, a.Server(), nexus.TaskInventory, nexus.TaskSagaReassignment)
	for sample, want := range map[string]float64{
		"nexus_zones_expunged_unconfirmed": 1,
		bSaga:                              1,
		fmt.Sprintf(`nexus_replica_info{nexus_id=%q,state="expunged"}`, b.ID()): 1,
		`nexus_events_total{event="sagas_reassigned"}`:                          0,
	} {
		if got := metric(t, a.Server(), sample); got != want {
			t.Errorf("before B is confirmed gone %s is %v; want %v", sample, got, want)
		}
	}
	for _, s := range r.Sleds() {
		if age := metric(t, a.Server(), fmt.Sprintf(`nexus_sled_inventory_age_seconds{sled_id=%q}`, s.ID())); age <= 0 || age > 60 {
			t.Errorf("sled %s's inventory age is %v s", s.ID(), age)
		}
	}
	if rec, err := ds.SagaGet(ctx, held.ID); err != nil || rec.Owner != b.ID() {
		t.Fatalf("before B is confirmed gone its saga is %+v (%v)", rec, err)
	}

	if _, err := r.Sled(1).Agent().Sim.ClearZoneFaults(ctx, &sledagentv1.ClearZoneFaultsRequest{}); err != nil {
		t.Fatal(err)
	}
	r.Sled(1).Agent().WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		return zoneAbsent(inv, b.ID())
	})
	runTasks(t, a.Server(), nexus.TaskInventory)
	testutil.WaitFor(t, zonesBound, func() error {
		rec, err := ds.SagaGet(ctx, held.ID)
		if err == nil && (rec.Owner != a.ID() || rec.State != saga.StateDone) {
			err = fmt.Errorf("B's saga is %s under %s", rec.State, rec.Owner)
		}
		return err
	})
	for sample, want := range map[string]float64{
		"nexus_zones_expunged_unconfirmed": 0,
		bSaga:                              0,
		`nexus_events_total{event="sagas_reassigned"}`: 1,
	} {
		if got := metric(t, a.Server(), sample); got != want {
			t.Errorf("once B's saga moved %s is %v; want %v", sample, got, want)
		}
	}
	replica, err := ds.NexusZoneGet(ctx, b.ID())
	if err != nil || replica.SagasReassigned != 1 || replica.ReassignedTo != a.ID() || replica.ZoneConfirmedGone.IsZero() {
		t.Fatalf("B's record is %+v (%v)", replica, err)
	}
}
