package datastore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

type expungeResult struct {
	changed bool
	err     error
}

// expungeDuring runs second while first is uncommitted: first's expunge
// waits before its commit until second has finished or, on PostgreSQL,
// waits on a lock; then first commits and second ends.
func expungeDuring(t *testing.T, db racktest.Database, ds *datastore.DataStore,
	first func(beforeCommit func()) expungeResult, second func() expungeResult) (expungeResult, expungeResult) {
	t.Helper()
	secondDone := make(chan expungeResult, 1)
	var locks *sql.DB
	if db.Backend == datastore.Postgres {
		var err error
		if locks, err = sql.Open("pgx", db.URL); err != nil {
			t.Fatal(err)
		}
		defer locks.Close()
	}
	var secondResult expungeResult
	firstResult := first(func() {
		go func() { secondDone <- second() }()
		if locks == nil {
			return // SQLite: one writer at a time; second waits for this commit
		}
		testutil.WaitFor(t, 10*time.Second, func() error {
			select {
			case secondResult = <-secondDone:
				secondDone <- secondResult
				return nil
			default:
			}
			var waiting int
			if err := locks.QueryRowContext(context.Background(), `SELECT count(*) FROM pg_locks WHERE NOT granted`).Scan(&waiting); err != nil {
				return err
			}
			if waiting == 0 {
				return fmt.Errorf("the second expunge neither ended nor waits on a lock")
			}
			return nil
		})
	})
	secondResult = <-secondDone
	return firstResult, secondResult
}

// X3, Z9: two operators expunge the last two replicas at once. One expunge
// is refused as the last replica's, whichever commits first; an active
// replica is always left. On PostgreSQL each used to count the other as
// active before either committed, and both committed.
func TestX3_TwoExpungesAtOnceNeverLeaveTheRackWithoutAnActiveReplica(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		ds := db.Open(t)
		s1, s2, a, b := uuid.New(), uuid.New(), uuid.New(), uuid.New()
		plan := model.RackPlan{Sleds: []model.SledZones{
			{SledID: s1, Generation: 1, Zones: []model.Zone{nexusZone(a, 10)}},
			{SledID: s2, Generation: 1, Zones: []model.Zone{nexusZone(b, 20)}}}}
		if _, err := ds.RackSetUp(ctx, uuid.Nil, plan, now); err != nil {
			t.Fatal(err)
		}
		first, second := expungeDuring(t, db, ds, func(beforeCommit func()) expungeResult {
			_, changed, err := ds.ZoneExpungeBeforeCommit(ctx, s1, a, now, beforeCommit)
			return expungeResult{changed, err}
		}, func() expungeResult {
			_, changed, err := ds.ZoneExpunge(ctx, s2, b, now)
			return expungeResult{changed, err}
		})
		if first.err != nil || !first.changed || !errors.Is(second.err, model.ErrLastReplica) {
			t.Fatalf("the first expunge: %+v; the second: %+v; want the first done and the second refused as the last replica's", first, second)
		}
		replicas, err := ds.NexusZoneList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range replicas {
			if r.ID == b && r.State != model.NexusActive {
				t.Fatalf("replica b is %s; the rack has no active replica", r.State)
			}
		}
	})
}

// Z9: an expunge repeated while the first is under way (an operator's
// retry) changes nothing: the sled's config goes up one generation, and
// the zone keeps the first expunge's generation and time.
func TestZ9_AnExpungeRepeatedWhileTheFirstIsUnderWayChangesNothing(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		ds := db.Open(t)
		sled, a, _ := twoReplicas(t, ds)
		later := now.Add(time.Minute)
		first, second := expungeDuring(t, db, ds, func(beforeCommit func()) expungeResult {
			_, changed, err := ds.ZoneExpungeBeforeCommit(ctx, sled, a, now, beforeCommit)
			return expungeResult{changed, err}
		}, func() expungeResult {
			_, changed, err := ds.ZoneExpunge(ctx, sled, a, later)
			return expungeResult{changed, err}
		})
		if first.err != nil || second.err != nil || !first.changed || second.changed {
			t.Fatalf("the first expunge: %+v; the second: %+v; want the first to expunge and the second to change nothing", first, second)
		}
		st, err := ds.SledZonesStatusGet(ctx, sled)
		if err != nil {
			t.Fatal(err)
		}
		for _, z := range st.Zones {
			if z.ID == a && (z.ExpungedGeneration != 2 || !z.TimeExpunged.Equal(now.Truncate(time.Microsecond))) {
				t.Fatalf("the zone is expunged at generation %d, %s; want 2, %s", z.ExpungedGeneration, z.TimeExpunged, now)
			}
		}
		if st.Generation != 2 {
			t.Fatalf("the sled's config is at generation %d; want 2", st.Generation)
		}
	})
}

// Z9: a failed push of a generation the sled has already taken (another
// replica's late push of an older config) does not mark the sled's config
// as failing; a failed push of a newer one does.
func TestZ9_ALateFailedPushOfAnOlderGenerationDoesNotMarkTheSledFailing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		sled, _, _ := twoReplicas(t, ds)
		if err := ds.SledZonesPushed(ctx, sled, 1, nil, now); err != nil {
			t.Fatal(err)
		}
		if err := ds.SledZonesPushed(ctx, sled, 1, errors.New("late and lost"), now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		st, err := ds.SledZonesStatusGet(ctx, sled)
		if err != nil {
			t.Fatal(err)
		}
		if st.Push.Error != "" || st.Push.Generation != 1 {
			t.Fatalf("after generation 1 was taken, a late failed push of it left the push status %+v", st.Push)
		}
		if err := ds.SledZonesPushed(ctx, sled, 2, errors.New("sled unreachable"), now.Add(2*time.Second)); err != nil {
			t.Fatal(err)
		}
		if st, err = ds.SledZonesStatusGet(ctx, sled); err != nil || st.Push.Error != "sled unreachable" {
			t.Fatalf("a failed push of generation 2 left the push status %+v (%v)", st.Push, err)
		}
	})
}

// Z9, SPEC 6: a zones push pass pushes every sled that may lack its config
// (never pushed, a new generation whose push failed, an inventory
// showing no ledger) and
// a tenth of the others, longest-pushed first, so that ten passes push
// every sled again; a pass no longer costs every sled two fsynced ledger
// writes.
func TestZ9_APushPassGoesToTheSledsThatMayLackTheirConfigAndATenthOfTheRest(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		var plan model.RackPlan
		for i := range 20 {
			plan.Sleds = append(plan.Sleds, model.SledZones{SledID: uuid.New(), Generation: 1,
				Zones: []model.Zone{nexusZone(uuid.New(), 10+i)}})
		}
		if _, err := ds.RackSetUp(ctx, uuid.Nil, plan, now); err != nil {
			t.Fatal(err)
		}
		var failing uuid.UUID // its pushes fail
		toPush := func(at time.Time) map[uuid.UUID]model.SledZones {
			t.Helper()
			cfgs, err := ds.SledZonesToPush(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			out := map[uuid.UUID]model.SledZones{}
			for _, c := range cfgs {
				out[c.SledID] = c
				var pushErr error
				if c.SledID == failing {
					pushErr = errors.New("sled unreachable")
				}
				if err := ds.SledZonesPushed(ctx, c.SledID, c.Generation, pushErr, at); err != nil {
					t.Fatal(err)
				}
			}
			return out
		}
		if got := toPush(now); len(got) != 20 {
			t.Fatalf("before any push, a pass pushed %d of 20 sleds", len(got))
		}
		// Every sled took its config, and none has been inventoried yet
		// (as right after rack setup): its answer is durable (Z3), so only
		// the refresh share is pushed again, not all 20.
		again := toPush(now.Add(time.Second))
		if len(again) != 2 {
			t.Fatalf("after every sled took its config, none inventoried yet, a pass pushed %d of 20 sleds; want the refresh share, 2", len(again))
		}
		for _, s := range plan.Sleds {
			if got, ok := again[s.SledID]; ok && (got.Generation != 1 || len(got.Zones) != 1 || got.Zones[0].ID != s.Zones[0].ID) {
				t.Fatalf("sled %s is pushed %+v, want its generation 1 and zone %s", s.SledID, got, s.Zones[0].ID)
			}
		}
		for _, s := range plan.Sleds {
			if _, err := ds.InventoryRecord(ctx, model.SledInventory{SledID: s.SledID, TimeCollected: now,
				LedgeredGeneration: 1, ReconciledGeneration: 1, Reconciler: model.ReconcilerIdle}); err != nil {
				t.Fatal(err)
			}
		}
		lost := plan.Sleds[3].SledID
		failing = plan.Sleds[4].SledID
		if _, _, err := ds.ZoneExpunge(ctx, failing, plan.Sleds[4].Zones[0].ID, now); err != nil {
			t.Fatal(err)
		}
		if _, err := ds.InventoryRecord(ctx, model.SledInventory{SledID: lost, TimeCollected: now.Add(time.Second),
			Reconciler: model.ReconcilerIdle}); err != nil {
			t.Fatal(err)
		}
		pushedAgain := map[uuid.UUID]int{}
		for pass := range 10 {
			got := toPush(now.Add(time.Duration(10+pass) * time.Second))
			if c, ok := got[failing]; !ok || c.Generation != 2 || len(c.Zones) != 0 {
				t.Fatalf("pass %d pushed the sled whose push of its new generation failed %+v (%v), want generation 2 without its expunged zone",
					pass, c, ok)
			}
			if _, ok := got[lost]; !ok && pass == 0 {
				t.Fatal("the first pass after an inventory showed a sled without a ledger did not push it")
			}
			if len(got) > 4 {
				t.Fatalf("pass %d pushed %d sleds; want the failing one and at most 3 more (2 to refresh, 1 that lost its ledger)", pass, len(got))
			}
			for s := range got {
				pushedAgain[s]++
			}
		}
		for _, s := range plan.Sleds {
			if pushedAgain[s.SledID] == 0 {
				t.Fatalf("sled %s was not pushed again in 10 passes", s.SledID)
			}
		}
	})
}
