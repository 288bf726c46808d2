package datastore_test

import (
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
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
		const liveness = 7 * time.Second
		got, err := heard.SledGet(ctx, s.ID)
		if err != nil || got.Reachability(time.Now(), liveness) != model.SledReachable {
			t.Fatalf("the replica that heard the sled sees it last seen %v (%v), want reachable", got.TimeLastSeen, err)
		}
		vmm := model.VMM{ID: uuid.New(), InstanceID: inst.ID, TimeCreated: time.Now(),
			Runtime: model.VMMRuntime{State: model.VMMCreating, Generation: 1, TimeUpdated: time.Now()}}
		if _, err := other.VMMAllocate(ctx, vmm, 1, 1<<30, liveness); !errors.Is(err, model.ErrNoCapacity) {
			t.Fatalf("a replica that heard nothing placed a VMM on a sled the database has not seen for long: %v", err)
		} else if !strings.Contains(err.Error(), "no reachable sled") || !strings.Contains(err.Error(), s.ID.String()) {
			t.Fatalf("refused as %q; want it to say no sled with room is reachable, naming sled %s", err, s.ID)
		}
		if sled, err := heard.VMMAllocate(ctx, vmm, 1, 1<<30, liveness); err != nil || sled != s.ID {
			t.Fatalf("the replica that heard the sled placed a VMM on %v, %v; want sled %s", sled, err, s.ID)
		}
	})
}

// holdWrites makes the database wait, as a busy one does: another
// connection takes SQLite's write lock, or on PostgreSQL sled's row lock
// (the heartbeats' write) and the placement lock. release lets it go.
func holdWrites(t *testing.T, db racktest.Database, sled uuid.UUID) (release func()) {
	t.Helper()
	driver, dsn := "sqlite", "file:"+db.URL+"?_pragma=busy_timeout(10000)&_txlock=immediate"
	if db.Backend == datastore.Postgres {
		driver, dsn = "pgx", db.URL
	}
	conn, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE sled SET address = address WHERE id = $1`, sled.String()); err != nil {
		t.Fatal(err)
	}
	if db.Backend == datastore.Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, datastore.PlacementLock); err != nil {
			t.Fatal(err)
		}
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			tx.Rollback() //nolint:errcheck // only lets go
			conn.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// TestSPEC6_AHeartbeatIsRecordedAtTheTimeItWasHeard: a heartbeat that
// waits for its write behind a slow one is written at the time it was
// heard, not when its write began; or a sled that stopped would read as
// seen later than it was, on every replica, and get VMMs for that long
// after the heartbeat timeout. Found by review: the batch wrote the time
// its write began.
func TestSPEC6_AHeartbeatIsRecordedAtTheTimeItWasHeard(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		heard, other := db.Open(t), db.Open(t)
		_, a := fixture(t, heard)
		b := a
		b.ID = uuid.New()
		if err := heard.SledUpsert(ctx, b); err != nil {
			t.Fatal(err)
		}
		writing := make(chan struct{}, 2)
		heard.OnHeartbeatWrite(func() { writing <- struct{}{} })
		release := holdWrites(t, db, a.ID)
		answered := make(chan error, 2)
		go func() { answered <- heard.SledHeartbeat(ctx, a.ID) }()
		<-writing // the first batch's write waits
		go func() { answered <- heard.SledHeartbeat(ctx, b.ID) }()
		var heardB time.Time
		testutil.WaitFor(t, 5*time.Second, func() error {
			// In memory: on SQLite the replica's one connection is the
			// one waiting.
			if heardB = heard.Heard(b.ID); heardB.IsZero() {
				return errors.New("sled B's heartbeat is not heard yet")
			}
			return nil
		})
		release()
		for range 2 {
			if err := <-answered; err != nil {
				t.Fatal(err)
			}
		}
		seen, err := other.SledsLastSeen(ctx, []uuid.UUID{b.ID})
		if err != nil {
			t.Fatal(err)
		}
		if want := heardB.Truncate(time.Microsecond); !seen[b.ID].Equal(want) {
			t.Fatalf("sled B was heard at %s; the database has it last seen at %s", want.Format(time.RFC3339Nano),
				seen[b.ID].Format(time.RFC3339Nano))
		}
	})
}

// TestSPEC6_APlacementJudgesLivenessWhenItsTurnComes: a placement that
// waited for its turn (placements take turns) does not take a sled that
// went silent for longer than the timeout meanwhile. Found by review: the
// saga computed the cutoff before waiting.
func TestSPEC6_APlacementJudgesLivenessWhenItsTurnComes(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		ds := db.Open(t)
		p, other := fixture(t, ds)
		const liveness = 2 * time.Second
		silent := model.Sled{ID: uuid.New(), Address: "127.0.0.1:2", NCPUs: 64, MemoryBytes: 512 << 30,
			Zpools: []string{"oxp_a"}, TimeLastSeen: time.Now()}
		if err := ds.SledUpsert(ctx, silent); err != nil {
			t.Fatal(err)
		}
		inst := newInstance(p.ID, "vm")
		if err := ds.InstanceCreate(ctx, inst); err != nil {
			t.Fatal(err)
		}
		release := holdWrites(t, db, other.ID)
		asked := time.Now()
		placed := make(chan error, 1)
		go func() {
			_, err := ds.VMMAllocate(ctx, model.VMM{ID: uuid.New(), InstanceID: inst.ID, TimeCreated: asked,
				Runtime: model.VMMRuntime{State: model.VMMCreating, Generation: 1, TimeUpdated: asked}}, 1, 1<<30, liveness)
			placed <- err
		}()
		testutil.WaitFor(t, 10*time.Second, func() error {
			if time.Since(silent.TimeLastSeen) <= liveness+100*time.Millisecond {
				return errors.New("the sled has not been silent for longer than the timeout yet")
			}
			return nil
		})
		release()
		if err := <-placed; !errors.Is(err, model.ErrNoCapacity) {
			t.Fatalf("a placement asked while the sled was live, and run once it had been silent %v with a %v timeout: %v; want ErrNoCapacity",
				time.Since(silent.TimeLastSeen).Round(time.Millisecond), liveness, err)
		}
	})
}
