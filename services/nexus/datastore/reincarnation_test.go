package datastore_test

import (
	"testing"
	"time"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// N8: a stop (or force-terminate) between the reincarnation task's list
// and its claim wins: the claim checks the wish again in its own statement
// and the instance is not booted. So do a policy changed to never and an
// update that took the instance meanwhile.
func TestN8_AReincarnationClaimLosesToAStopThatCameAfterTheList(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		p, _ := fixture(t, ds)
		_, replica, _ := twoReplicas(t, ds)
		failed := newInstance(p.ID, "failed")
		failed.Runtime.State, failed.IntendedState = model.InstanceFailed, model.IntendRunning
		if err := ds.InstanceCreate(ctx, failed); err != nil {
			t.Fatal(err)
		}
		cooled := time.Now().Add(-time.Hour)
		listed, err := ds.InstancesToReincarnate(ctx, cooled)
		if err != nil || len(listed) != 1 {
			t.Fatalf("listed %v (%v), want the failed instance", listed, err)
		}
		// The user stops it now, after the list.
		if err := ds.InstanceSetIntendedState(ctx, failed.ID, model.IntendStopped, time.Now()); err != nil {
			t.Fatal(err)
		}
		claimed, err := ds.InstanceClaimAutoRestart(ctx, failed.ID, time.Now(), cooled, replica)
		if err != nil || claimed {
			t.Fatalf("claim after a stop: %v (%v), want not claimed: the stop came last", claimed, err)
		}
		// Wanted running again, it is claimed once.
		if err := ds.InstanceSetIntendedState(ctx, failed.ID, model.IntendRunning, time.Now()); err != nil {
			t.Fatal(err)
		}
		if claimed, err := ds.InstanceClaimAutoRestart(ctx, failed.ID, time.Now(), cooled, replica); err != nil || !claimed {
			t.Fatalf("claim of an instance wanted running: %v (%v), want claimed", claimed, err)
		}
	})
}
