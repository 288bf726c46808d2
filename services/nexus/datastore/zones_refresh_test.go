package datastore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// Z9, SPEC 6: every sled is pushed its config again within ten passes,
// even while some sleds cannot be reached. A refresh push of the
// generation a sled already took that fails must not leave that sled
// first in line for every later refresh: two such sleds out of twenty
// would take the whole refresh share of every pass, and the eighteen
// healthy sleds would never be pushed again.
func TestZ9_SledsThatCannotBeReachedDoNotStarveTheOthersOfRefreshPushes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		var plan model.RackPlan
		for i := range 20 {
			plan.Sleds = append(plan.Sleds, model.SledZones{SledID: uuid.New(), Generation: 1,
				Zones: []model.Zone{nexusZone(uuid.New(), 10+i)}})
		}
		if _, err := ds.RackSetUp(ctx, uuid.Nil, plan, now); err != nil {
			t.Fatal(err)
		}
		down := map[uuid.UUID]bool{}
		pass := func(at time.Time) map[uuid.UUID]bool {
			t.Helper()
			cfgs, err := ds.SledZonesToPush(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			pushed := map[uuid.UUID]bool{}
			for _, c := range cfgs {
				pushed[c.SledID] = true
				var pushErr error
				if down[c.SledID] {
					pushErr = errors.New("sled unreachable")
				}
				if err := ds.SledZonesPushed(ctx, c.SledID, c.Generation, pushErr, at); err != nil {
					t.Fatal(err)
				}
			}
			return pushed
		}
		// Every sled takes generation 1, and its inventory says so.
		if got := pass(now); len(got) != 20 {
			t.Fatalf("the first pass pushed %d of 20 sleds", len(got))
		}
		for _, s := range plan.Sleds {
			if _, err := ds.InventoryRecord(ctx, model.SledInventory{SledID: s.SledID, TimeCollected: now,
				LedgeredGeneration: 1, ReconciledGeneration: 1, Reconciler: model.ReconcilerIdle}); err != nil {
				t.Fatal(err)
			}
		}
		// Two sleds stop answering: the two the next pass refreshes, as it
		// happens.
		next, err := ds.SledZonesToPush(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range next {
			down[c.SledID] = true
		}
		if len(down) != 2 {
			t.Fatalf("a refresh pass pushed %d sleds, want 2 (a tenth of 20)", len(down))
		}
		pushedAgain := map[uuid.UUID]bool{}
		for i := range 20 {
			for s := range pass(now.Add(time.Duration(2+i) * time.Second)) {
				pushedAgain[s] = true
			}
		}
		healthy := 0
		for _, s := range plan.Sleds {
			if !down[s.SledID] && pushedAgain[s.SledID] {
				healthy++
			}
		}
		if healthy != 18 {
			t.Fatalf("in 20 passes after two sleds stopped answering, %d of the 18 healthy sleds were pushed again, want all 18", healthy)
		}
	})
}
