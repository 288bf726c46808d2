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
