package datastore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

// TestSPEC6_ASledHeardIsNotLostWhileItsHeartbeatsCannotBeWritten: a
// database too busy (here: failing) to record a sled's heartbeats does not
// make the replica that heard them call the sled unreachable, nor refuse it
// VMMs. Another replica, which heard nothing, goes by the database.
func TestSPEC6_ASledHeardIsNotLostWhileItsHeartbeatsCannotBeWritten(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		heard, other := db.Open(t), db.Open(t)
		p, s := fixture(t, heard) // last seen at a fixed time long past
		inst := newInstance(p.ID, "vm")
		if err := heard.InstanceCreate(ctx, inst); err != nil {
			t.Fatal(err)
		}
		lift := db.FailUpdates(t, "sled", "NEW.time_last_seen IS NOT NULL")
		defer lift()
		if err := heard.SledHeartbeat(ctx, s.ID); err == nil {
			t.Fatal("a heartbeat the database refused was answered as written")
		}
		liveAfter := time.Now().Add(-7 * time.Second)
		got, err := heard.SledGet(ctx, s.ID)
		if err != nil || got.Reachability(time.Now(), 7*time.Second) != model.SledReachable {
			t.Fatalf("the replica that heard the sled sees it last seen %v (%v), want reachable", got.TimeLastSeen, err)
		}
		vmm := model.VMM{ID: uuid.New(), InstanceID: inst.ID, TimeCreated: time.Now(),
			Runtime: model.VMMRuntime{State: model.VMMCreating, Generation: 1, TimeUpdated: time.Now()}}
		if _, err := other.VMMAllocate(ctx, vmm, 1, 1<<30, liveAfter); !errors.Is(err, model.ErrNoCapacity) {
			t.Fatalf("a replica that heard nothing placed a VMM on a sled the database has not seen for long: %v", err)
		}
		if sled, err := heard.VMMAllocate(ctx, vmm, 1, 1<<30, liveAfter); err != nil || sled != s.ID {
			t.Fatalf("the replica that heard the sled placed a VMM on %v, %v; want sled %s", sled, err, s.ID)
		}
	})
}
