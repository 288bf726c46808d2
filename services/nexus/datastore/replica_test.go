package datastore_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

// nexusZone is a nexus zone listening on ports port to port+2.
func nexusZone(id uuid.UUID, port int) model.Zone {
	return model.Zone{ID: id, Kind: model.ZoneNexus, Pool: "oxp_" + uuid.NewString(), Address: fmt.Sprintf("127.0.0.1:%d", port),
		Nexus: &model.NexusZoneDetails{ExternalAddress: fmt.Sprintf("127.0.0.1:%d", port+1),
			MetricsAddress: fmt.Sprintf("127.0.0.1:%d", port+2), DatabaseBackend: "postgres", DatabaseURL: "postgres://db"}}
}

// twoReplicas sets up a rack whose sled runs two nexus zones: a and b.
func twoReplicas(t *testing.T, ds *datastore.DataStore) (sled, a, b uuid.UUID) {
	t.Helper()
	sled, a, b = uuid.New(), uuid.New(), uuid.New()
	plan := model.RackPlan{Sleds: []model.SledZones{{SledID: sled, Generation: 1, Zones: []model.Zone{nexusZone(a, 10), nexusZone(b, 20)}}}}
	if _, err := ds.RackSetUp(ctx, uuid.Nil, plan, now); err != nil {
		t.Fatal(err)
	}
	return sled, a, b
}

// X3, by transaction order: while replica b claims work in a loop (sagas,
// updater locks, automatic restarts), it is expunged. What it held when
// the expunge committed is read inside the expunging transaction; every
// claim b ever made must be among it, so none committed after the
// expunge, and every claim b tried after it was refused as not active.
func TestX3_AnExpungedReplicaClaimsNothingFromTheCommitOn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		sled, _, b := twoReplicas(t, ds)
		p, _ := fixture(t, ds)
		const instances, afterExpunge = 400, 24
		var toLock, toRestart []uuid.UUID
		for i := range instances {
			free := newInstance(p.ID, fmt.Sprintf("lock-%d", i))
			failed := newInstance(p.ID, fmt.Sprintf("restart-%d", i))
			failed.Runtime.State, failed.IntendedState = model.InstanceFailed, model.IntendRunning
			for _, inst := range []model.Instance{free, failed} {
				if err := ds.InstanceCreate(ctx, inst); err != nil {
					t.Fatal(err)
				}
			}
			toLock, toRestart = append(toLock, free.ID), append(toRestart, failed.ID)
		}

		var (
			mu                       sync.Mutex
			sagas, locked, restarted []uuid.UUID
			refusedAfter             [3]atomic.Int32
			next                     atomic.Int32
			unexpected               []error
			expunging                = make(chan struct{}) // the expunge may commit from here on
			expunged                 = make(chan struct{}) // the expunge has committed
			progress                 = make(chan struct{}, 1)
			wg                       sync.WaitGroup
		)
		note := func(kind int, id uuid.UUID, err error, into *[]uuid.UUID) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				*into = append(*into, id)
			case errors.Is(err, model.ErrReplicaNotActive):
				select {
				case <-expunging:
					refusedAfter[kind].Add(1)
				default:
					unexpected = append(unexpected, fmt.Errorf("refused before the expunge: %w", err))
				}
			default:
				unexpected = append(unexpected, err)
			}
		}
		done := func() bool {
			select {
			case <-expunged:
				return refusedAfter[0].Load() >= 3 && refusedAfter[1].Load() >= 3 && refusedAfter[2].Load() >= 3
			default:
				return false
			}
		}
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !done() {
					k := int(next.Add(1)) - 1
					if k >= instances {
						return
					}
					if k >= instances-afterExpunge {
						// However slowly the expunge commits (a loaded
						// machine), some instances are left to be refused
						// after it.
						<-expunged
					}
					r := saga.Record{ID: uuid.New(), Template: "instance-start", Params: []byte(`{}`), Owner: b,
						State: saga.StateRunning, TimeCreated: now, TimeStateChanged: now}
					note(0, r.ID, ds.SagaCreate(ctx, r), &sagas)
					ok, err := ds.InstanceUpdaterLock(ctx, toLock[k], uuid.New(), b)
					if err == nil && !ok {
						err = fmt.Errorf("instance %s's free lock was held", toLock[k])
					}
					note(1, toLock[k], err, &locked)
					ok, err = ds.InstanceClaimAutoRestart(ctx, toRestart[k], time.Now(), time.Now().Add(-time.Hour), b)
					if err == nil && !ok {
						err = fmt.Errorf("instance %s's restart could not be claimed", toRestart[k])
					}
					note(2, toRestart[k], err, &restarted)
					select {
					case progress <- struct{}{}:
					default:
					}
				}
			}()
		}
		for range 20 {
			<-progress // the loop is well under way
		}
		close(expunging)
		held, err := ds.ZoneExpungeReadingClaims(ctx, sled, b, b, time.Now())
		close(expunged)
		if err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if len(unexpected) > 0 {
			t.Fatalf("claims failed otherwise than as not active: %v", unexpected)
		}
		if !done() {
			t.Fatalf("the loop ran out of instances before every kind of claim was refused after the expunge (%d, %d, %d)",
				refusedAfter[0].Load(), refusedAfter[1].Load(), refusedAfter[2].Load())
		}
		for _, c := range []struct {
			what string
			made []uuid.UUID
			held map[uuid.UUID]bool
		}{{"saga", sagas, held.Sagas}, {"updater lock", locked, held.Locked}, {"restart claim", restarted, held.Restarted}} {
			if len(c.made) == 0 {
				t.Errorf("replica b made no %s before its expunge", c.what)
			}
			for _, id := range c.made {
				if !c.held[id] {
					t.Errorf("%s %s committed after the expunge did", c.what, id)
				}
			}
		}
	})
}

// X6: the updater locks view names, for each held lock, the saga holding
// it, that saga's replica, the replica's state and its sled.
func TestX6_TheUpdaterLocksViewNamesTheSagaItsReplicaAndTheReplicasSled(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		sled, _, b := twoReplicas(t, ds)
		p, _ := fixture(t, ds)
		inst := newInstance(p.ID, "held")
		if err := ds.InstanceCreate(ctx, inst); err != nil {
			t.Fatal(err)
		}
		r := saga.Record{ID: uuid.New(), Template: "instance-update", Params: []byte(`{}`), Owner: b,
			State: saga.StateRunning, TimeCreated: now, TimeStateChanged: now}
		if err := ds.SagaCreate(ctx, r); err != nil {
			t.Fatal(err)
		}
		if ok, err := ds.InstanceUpdaterLock(ctx, inst.ID, r.ID, b); err != nil || !ok {
			t.Fatalf("locking: %v %v", ok, err)
		}
		locks, err := ds.UpdaterLockList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := datastore.UpdaterLock{Instance: inst.ID, InstanceName: "held", Project: p.ID, Saga: r.ID, SagaTemplate: "instance-update",
			Owner: b, OwnerState: model.NexusActive, OwnerSled: sled, TimeSagaCreated: now.Truncate(time.Microsecond)}
		if len(locks) != 1 || locks[0] != want {
			t.Fatalf("the updater locks view is %+v; want %+v", locks, want)
		}
		if one, err := ds.UpdaterLockGet(ctx, inst.ID); err != nil || one != want {
			t.Fatalf("instance %s's lock is %+v (%v); want %+v", inst.ID, one, err, want)
		}
	})
}
