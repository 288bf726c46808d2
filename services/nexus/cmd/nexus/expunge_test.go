package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	"github.com/rackplane/rackplane/services/racktest"
)

// expungeBound bounds each wait of the expunge scenario: inventory is
// collected every 10 s and sagas reassigned on the collection that confirms
// a zone gone, so each step needs a few seconds; this only bounds a failure.
const expungeBound = 90 * time.Second

// TestX4_X5_AnExpungedReplicasSagasMoveOnlyOnceItsZoneIsConfirmedGone is
// the seed's scenario (seeds/000) on processes, PostgreSQL, 3 sleds and 3
// replicas as zones. Replica B holds a start saga mid-flight and an update
// saga holding an updater lock, each stopped at a crash point.
//
//   - alive: the operator expunges B's zone while its sled fails to shut
//     it down. B claims nothing from the expunge on and stops serving
//     (X3), but inventory still shows its zone, so its sagas stay with it.
//     Once the fault is cleared the zone is really gone, inventory proves
//     it, and A or C adopts the sagas (X4), which end; the instances settle
//     and no sled runs a VMM the database does not know (X5, N12).
//   - killed: B is killed with kill -9 and its zone cannot start again. The
//     instance stays held and the operator sees by whom (X6); after the
//     expunge and its confirmation it is freed.
func TestX4_X5_AnExpungedReplicasSagasMoveOnlyOnceItsZoneIsConfirmedGone(t *testing.T) {
	for _, variant := range []string{"alive", "killed"} {
		t.Run(variant, func(t *testing.T) {
			s := newExpungeScenario(t)
			s.holdBothSagasOnB()
			if variant == "killed" {
				s.killB()
			}
			s.forceTerminateNamesTheHolder()
			s.expungeB(variant == "alive")
			if variant == "alive" {
				s.notConfirmedWhileTheZoneRemains()
				s.clearTheShutdownFault()
			}
			s.sagasMoveAndEnd()
			s.timeline.log(t)
		})
	}
}

// expungeScenario is one run of the scenario: the rack, its replicas A
// (replica 0) and B (replica 1, on sled 1), and what was seen when.
type expungeScenario struct {
	t        *testing.T
	rack     *rack
	b        *racktest.ZoneNexus
	bSled    racktest.Sled
	admin    *racktest.Client // replica 0's REST API, as a fleet admin
	viaB     *oxide.Client
	start    uuid.UUID // B's start saga, stopped before ensure_running
	update   uuid.UUID // B's update saga, stopped before apply, holding a lock
	locked   string    // the instance whose lock B's update saga holds
	timeline timeline
}

// timeline is the scenario's moments, for the closing note.
type timeline struct {
	lastClaimByB, expungeCommitted, zoneGone, confirmed, reassigned, sagasEnded time.Time
}

func (tl timeline) log(t *testing.T) {
	since := func(at time.Time) string { return at.Sub(tl.expungeCommitted).Round(time.Millisecond).String() }
	t.Logf("timeline from the expunge commit: last claim by B %s, zone gone from its sled %s, "+
		"inventory confirming %s, reassignment %s, sagas ended %s; zone gone → sagas adopted %s",
		since(tl.lastClaimByB), since(tl.zoneGone), since(tl.confirmed), since(tl.reassigned), since(tl.sagasEnded),
		tl.reassigned.Sub(tl.zoneGone).Round(time.Millisecond))
}

func newExpungeScenario(t *testing.T) *expungeScenario {
	stopAt := []string{
		"--" + crashPointFlag, sagas.InstanceStart + "/ensure_running/before",
		"--" + crashPointFlag, sagas.InstanceUpdate + "/apply/before",
	}
	r := newRack(t, racktest.StartProcesses(t, racktest.Options{Backend: datastore.Postgres, Nexuses: 3, Sleds: 3,
		ZoneRuntime: "process", NexusZoneArgs: map[int][]string{1: stopAt}}))
	s := &expungeScenario{t: t, rack: r, b: r.Nexus(1).(*racktest.ZoneNexus), bSled: r.Sled(1),
		admin: r.Client(racktest.FleetAdmin)}
	s.viaB = racktest.NewClient(s.b.ExternalURL(), r.Token(racktest.FleetAdmin)).SDK(t)
	if _, err := r.api.ProjectCreate(bg, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatalf("creating the project: %v", err)
	}
	return s
}

func (s *expungeScenario) createInstance(name string, start bool) {
	s.t.Helper()
	if _, err := s.rack.api.InstanceCreate(bg, oxide.InstanceCreateParams{Project: "p", Body: &oxide.InstanceCreate{
		Name: oxide.Name(name), Hostname: oxide.Hostname(name), Memory: 1 << 30, Ncpus: 1, Start: &start}}); err != nil {
		s.t.Fatalf("creating instance %s: %v", name, err)
	}
}

// crashPointSaga is the saga of template that B's log says stopped at its
// crash point; Nil if none has yet.
func (s *expungeScenario) crashPointSaga(template string) uuid.UUID {
	for _, line := range s.b.LogLines(crashPointMessage) {
		if line["saga"] == template {
			return uuid.MustParse(fmt.Sprint(line["saga_id"]))
		}
	}
	return uuid.Nil
}

// holdBothSagasOnB starts instance "vm" through B, whose start saga stops
// before ensure_running, and starts and stops instances through A until
// one's update lands on B (sleds report to every replica in turn) and
// stops holding that instance's updater lock.
func (s *expungeScenario) holdBothSagasOnB() {
	t := s.t
	s.createInstance("vm", false)
	go func() {
		// The request waits for the saga, which never ends on B.
		ctx, cancel := context.WithTimeout(bg, expungeBound)
		defer cancel()
		s.viaB.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"}) //nolint:errcheck // see above
	}()
	testutil.WaitFor(t, expungeBound, func() error {
		if s.start = s.crashPointSaga(sagas.InstanceStart); s.start == uuid.Nil {
			return fmt.Errorf("B's start saga has not reached its crash point")
		}
		return nil
	})
	for i := 0; s.update == uuid.Nil; i++ {
		if i == 20 {
			t.Fatalf("no update of 20 instances stopped landed on B")
		}
		name := fmt.Sprintf("held-%d", i)
		s.createInstance(name, true)
		s.rack.waitInstance(t, name, oxide.InstanceStateRunning)
		if _, err := s.rack.api.InstanceStop(bg, oxide.InstanceStopParams{Project: "p", Instance: oxide.NameOrId(name)}); err != nil {
			t.Fatalf("stopping %s: %v", name, err)
		}
		testutil.WaitFor(t, expungeBound, func() error {
			if s.update = s.crashPointSaga(sagas.InstanceUpdate); s.update != uuid.Nil {
				return nil
			}
			inst, err := s.rack.api.InstanceView(bg, oxide.InstanceViewParams{Project: "p", Instance: oxide.NameOrId(name)})
			if err == nil && inst.RunState == oxide.InstanceStateStopped {
				return nil // its updates landed elsewhere: try another
			}
			return fmt.Errorf("instance %s is %s (%v)", name, inst.RunState, err)
		})
	}
	lock := s.updaterLockOf(s.update)
	s.locked = lock.InstanceName
	if lock.Owner != s.b.ID() || lock.OwnerState != "active" {
		t.Fatalf("the updater locks view says %+v; want B's saga %s, B active", lock, s.update)
	}
	t.Logf("B (%s) holds start saga %s and update saga %s, which holds instance %s's updater lock",
		s.b.ID(), s.start, s.update, s.locked)
}

type updaterLockView struct {
	InstanceName string `json:"instance_name"`
	SagaID       string `json:"saga_id"`
	Owner        uuid.UUID
	OwnerState   string `json:"owner_state"`
}

// updaterLockOf is the updater locks view's entry of a saga (X6).
func (s *expungeScenario) updaterLockOf(sagaID uuid.UUID) updaterLockView {
	s.t.Helper()
	var locks struct{ Items []updaterLockView }
	if err := s.admin.MustCall(s.t, http.MethodGet, "/v1/system/updater-locks", "", http.StatusOK).JSON(&locks); err != nil {
		s.t.Fatal(err)
	}
	for _, l := range locks.Items {
		if l.SagaID == sagaID.String() {
			return l
		}
	}
	s.t.Fatalf("no updater lock held by saga %s: %+v", sagaID, locks.Items)
	return updaterLockView{}
}

// killB kills B with kill -9 and keeps its zone from starting again, as a
// replica whose sled cannot run it would be.
func (s *expungeScenario) killB() {
	s.t.Helper()
	if _, err := s.bSled.Agent().Sim.FailZoneStart(bg, &sledagentv1.FailZoneStartRequest{
		ZoneId: s.b.ID().String(), Count: 1 << 30, Message: "the test keeps B down"}); err != nil {
		s.t.Fatal(err)
	}
	s.b.Kill()
	if err := racktest.Serving(s.t, s.b.InternalAddr(), ""); err == nil {
		s.t.Fatalf("B serves after kill -9")
	}
}

// forceTerminateNamesTheHolder: the instance whose lock B's saga holds
// cannot be force-terminated to a settled state; the answer says by whom
// and what frees it (X6).
func (s *expungeScenario) forceTerminateNamesTheHolder() {
	t := s.t
	if lock := s.updaterLockOf(s.update); lock.Owner != s.b.ID() || lock.OwnerState != "active" {
		t.Fatalf("the updater locks view says %+v; want B's saga %s, B active", lock, s.update)
	}
	resp := s.admin.Call(t, http.MethodPost, "/v1/instances/"+s.locked+"/force-terminate?project=p", "")
	body := string(resp.Body)
	if resp.Status != http.StatusServiceUnavailable {
		t.Fatalf("force-terminate of the held instance answered %d %s; want 503", resp.Status, body)
	}
	for _, want := range []string{s.update.String(), s.b.ID().String(), "expunging its zone is the way out",
		"/v1/system/hardware/sleds/" + s.bSled.ID().String() + "/zones/" + s.b.ID().String() + "/expunge"} {
		if !strings.Contains(body, want) {
			t.Fatalf("force-terminate's 503 does not say %q: %s", want, body)
		}
	}
}

// expungeB expunges B's zone through A; with shutdownFails, its sled's
// shutdowns of the zone fail until the fault is cleared.
func (s *expungeScenario) expungeB(shutdownFails bool) {
	t := s.t
	if shutdownFails {
		if _, err := s.bSled.Agent().Sim.FailZoneShutdown(bg, &sledagentv1.FailZoneShutdownRequest{
			ZoneId: s.b.ID().String(), Count: 1 << 30, Message: "the test keeps B's zone up"}); err != nil {
			t.Fatal(err)
		}
	}
	s.admin.MustCall(t, http.MethodPost, "/v1/system/hardware/sleds/"+s.bSled.ID().String()+"/zones/"+s.b.ID().String()+"/expunge",
		"", http.StatusOK)
	ds := s.rack.DataStore()
	rec, err := ds.NexusZoneGet(bg, s.b.ID())
	if err != nil || rec.State != model.NexusExpunged {
		t.Fatalf("after the expunge B is %+v (%v)", rec, err)
	}
	s.timeline.expungeCommitted = rec.TimeExpunged
	for _, id := range []uuid.UUID{s.start, s.update} {
		sg, err := ds.SagaGet(bg, id)
		if err != nil {
			t.Fatal(err)
		}
		if sg.TimeCreated.After(s.timeline.lastClaimByB) {
			s.timeline.lastClaimByB = sg.TimeCreated
		}
	}
	// An expunged replica that is alive stops serving, then exits (X3),
	// although its sled cannot shut its zone down.
	testutil.WaitFor(t, expungeBound, func() error {
		if err := racktest.Serving(s.t, s.b.InternalAddr(), ""); err == nil {
			return fmt.Errorf("B still serves")
		}
		if s.b.Running() {
			return fmt.Errorf("B's process still runs")
		}
		return nil
	})
}

// notConfirmedWhileTheZoneRemains: collections of inventory after the
// expunge still list B's zone, so B is not confirmed gone and its sagas
// stay with it; the operator sees what they wait for.
func (s *expungeScenario) notConfirmedWhileTheZoneRemains() {
	t := s.t
	ds := s.rack.DataStore()
	// Two collections that began after the expunge: the zone was in both.
	var seen []time.Time
	testutil.WaitFor(t, expungeBound, func() error {
		st, err := ds.SledZonesStatusGet(bg, s.bSled.ID())
		if err != nil {
			return err
		}
		if st.Inventory == nil {
			return fmt.Errorf("no inventory of sled %s yet", s.bSled.ID())
		}
		if at := st.Inventory.TimeCollected; at.After(s.timeline.expungeCommitted) && !slices.Contains(seen, at) {
			seen = append(seen, at)
		}
		if len(seen) < 2 {
			return fmt.Errorf("%d inventory collections of sled %s since the expunge", len(seen), s.bSled.ID())
		}
		return nil
	})
	if !zonePresent(s.bSled.Agent().Inventory(), s.b.ID()) {
		t.Fatalf("B's zone left its sled although its shutdown fails")
	}
	for _, id := range []uuid.UUID{s.start, s.update} {
		sg, err := ds.SagaGet(bg, id)
		if err != nil || sg.Owner != s.b.ID() || sg.State.Finished() {
			t.Fatalf("before B is confirmed gone its saga %s is %+v (%v); want it still B's, unfinished", id, sg, err)
		}
	}
	open, err := ds.SagaListOpen(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, sg := range open {
		if sg.Owner == s.b.ID() && sg.TimeCreated.After(s.timeline.expungeCommitted) {
			t.Fatalf("expunged B claimed saga %s at %s, after its expunge at %s", sg.ID, sg.TimeCreated, s.timeline.expungeCommitted)
		}
	}
	b := s.replicaView(s.b.ID())
	if b.State != "expunged" || b.ZoneConfirmedGone || b.WaitingFor == "" || b.SagasRunning != 2 {
		t.Fatalf("the replicas view shows B as %+v; want expunged, not confirmed gone, saying what it waits for, with 2 sagas", b)
	}
	t.Logf("the replicas view says B waits for: %s", b.WaitingFor)
}

type replicaView struct {
	ID                uuid.UUID
	State             string
	ZoneConfirmedGone bool   `json:"zone_confirmed_gone"`
	SagasRunning      int    `json:"sagas_running"`
	SagasReassigned   int    `json:"sagas_reassigned"`
	ReassignedTo      string `json:"reassigned_to"`
	WaitingFor        string `json:"waiting_for"`
}

func (s *expungeScenario) replicaView(id uuid.UUID) replicaView {
	s.t.Helper()
	var replicas struct{ Items []replicaView }
	if err := s.admin.MustCall(s.t, http.MethodGet, "/v1/system/nexus-replicas", "", http.StatusOK).JSON(&replicas); err != nil {
		s.t.Fatal(err)
	}
	for _, r := range replicas.Items {
		if r.ID == id {
			return r
		}
	}
	s.t.Fatalf("replica %s is not listed: %+v", id, replicas.Items)
	return replicaView{}
}

// clearTheShutdownFault lets B's sled shut its zone down.
func (s *expungeScenario) clearTheShutdownFault() {
	if _, err := s.bSled.Agent().Sim.ClearZoneFaults(bg, &sledagentv1.ClearZoneFaultsRequest{}); err != nil {
		s.t.Fatal(err)
	}
}

// sagasMoveAndEnd: once the zone is gone from its sled, inventory confirms
// it, B's sagas move to an active replica, which ends them; both instances
// settle and every VMM on the sleds is one the database runs.
func (s *expungeScenario) sagasMoveAndEnd() {
	t := s.t
	ds := s.rack.DataStore()
	testutil.WaitFor(t, expungeBound, func() error {
		if zonePresent(s.bSled.Agent().Inventory(), s.b.ID()) {
			return fmt.Errorf("B's zone is still on its sled")
		}
		return nil
	})
	s.timeline.zoneGone = time.Now()
	var b model.NexusZone
	testutil.WaitFor(t, expungeBound, func() (err error) {
		if b, err = ds.NexusZoneGet(bg, s.b.ID()); err == nil && b.TimeReassigned.IsZero() {
			err = fmt.Errorf("B's sagas have not moved: %+v", b)
		}
		return err
	})
	s.timeline.confirmed, s.timeline.reassigned = b.ZoneConfirmedGone, b.TimeReassigned
	if b.ZoneConfirmedGone.IsZero() || b.ZoneConfirmedGone.Before(s.timeline.expungeCommitted) || b.TimeReassigned.Before(b.ZoneConfirmedGone) {
		t.Fatalf("B's sagas moved at %s; confirmed gone at %s, expunged at %s", b.TimeReassigned, b.ZoneConfirmedGone, b.TimeExpunged)
	}
	if b.ReassignedTo == s.b.ID() || b.ReassignedTo == uuid.Nil || b.SagasReassigned != 2 {
		t.Fatalf("B's sagas went to %s (%d of them); want both to an active replica", b.ReassignedTo, b.SagasReassigned)
	}
	testutil.WaitFor(t, expungeBound, func() error {
		for _, id := range []uuid.UUID{s.start, s.update} {
			sg, err := ds.SagaGet(bg, id)
			if err != nil {
				return err
			}
			if !sg.State.Finished() {
				return fmt.Errorf("saga %s is %s under %s", id, sg.State, sg.Owner)
			}
			if sg.State != saga.StateDone && sg.State != saga.StateUnwound {
				t.Fatalf("saga %s ended %s", id, sg.State)
			}
			if sg.TimeStateChanged.After(s.timeline.sagasEnded) {
				s.timeline.sagasEnded = sg.TimeStateChanged
			}
		}
		return nil
	})
	s.rack.waitInstance(t, "vm", oxide.InstanceStateRunning, oxide.InstanceStateStopped)
	s.rack.waitInstance(t, s.locked, oxide.InstanceStateStopped)
	for _, name := range []string{"vm", s.locked} {
		inst, err := s.rack.api.InstanceView(bg, oxide.InstanceViewParams{Project: "p", Instance: oxide.NameOrId(name)})
		if err != nil {
			t.Fatal(err)
		}
		snap, err := ds.InstanceSnapshot(bg, uuid.MustParse(inst.Id))
		if err != nil || model.NeedsSettling(snap) || snap.Instance.UpdaterID != nil {
			t.Fatalf("instance %s is not settled: %+v (%v)", name, snap.Instance, err)
		}
	}
	s.rack.checkVMMs(t, ds)
	if v := s.replicaView(s.b.ID()); !v.ZoneConfirmedGone || v.SagasReassigned != 2 || v.ReassignedTo != b.ReassignedTo.String() {
		t.Fatalf("the replicas view shows B as %+v", v)
	}
}

// zonePresent says whether a sled's inventory lists the zone.
func zonePresent(inv *sledagentv1.GetInventoryResponse, zone uuid.UUID) bool {
	for _, z := range inv.GetLastReconciliation().GetZones() {
		if z.GetZoneId() == zone.String() {
			return true
		}
	}
	return false
}

// waitInstance polls until the instance's run state is one of want.
func (r *rack) waitInstance(t *testing.T, name string, want ...oxide.InstanceState) {
	t.Helper()
	testutil.WaitFor(t, expungeBound, func() error {
		inst, err := r.api.InstanceView(bg, oxide.InstanceViewParams{Project: "p", Instance: oxide.NameOrId(name)})
		if err != nil {
			return err
		}
		if !slices.Contains(want, inst.RunState) {
			return fmt.Errorf("instance %s is %s, waiting for %v", name, inst.RunState, want)
		}
		return nil
	})
}
