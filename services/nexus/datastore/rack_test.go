package datastore_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

func rackPlan(sleds ...uuid.UUID) model.RackPlan {
	var p model.RackPlan
	for i, s := range sleds {
		sz := model.SledZones{SledID: s, Generation: 1}
		if i == 0 {
			sz.Zones = []model.Zone{{ID: uuid.New(), Kind: model.ZoneNexus, Pool: "oxp_" + uuid.NewString(),
				Address: "127.0.0.1:12221", Nexus: &model.NexusZoneDetails{ExternalAddress: "127.0.0.1:12220",
					MetricsAddress: "127.0.0.1:12223", DatabaseBackend: "postgres", DatabaseURL: "postgres://db"}}}
		}
		p.Sleds = append(p.Sleds, sz)
	}
	return p
}

// Z11: a rack is set up once. The same plan again changes nothing (how a
// stopped rack starts again); another plan is refused, saying what
// differs, and changes nothing either.
func TestZ11_ARackIsSetUpOnceAndAnotherPlanIsRefusedSayingWhatDiffers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		a, b := uuid.New(), uuid.New()
		plan := rackPlan(a, b)
		rack := uuid.New()
		if recorded, err := ds.RackSetUp(ctx, rack, plan, now); err != nil || !recorded {
			t.Fatalf("first setup: recorded %v, %v", recorded, err)
		}
		// The sled took its config: the plan ran.
		if err := ds.SledZonesPushed(ctx, a, 1, nil, now); err != nil {
			t.Fatal(err)
		}
		// The same plan, its sleds listed the other way round.
		again := model.RackPlan{Sleds: []model.SledZones{plan.Sleds[1], plan.Sleds[0]}}
		if recorded, err := ds.RackSetUp(ctx, uuid.Nil, again, now); err != nil || recorded {
			t.Fatalf("the same plan again: recorded %v, %v; want nothing recorded, no error", recorded, err)
		}
		if _, err := ds.RackSetUp(ctx, uuid.New(), plan, now); !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), rack.String()) {
			t.Fatalf("the same plan as another rack: %v, want ErrConflict naming rack %s", err, rack)
		}
		other := rackPlan(a, b)
		other.Sleds[0].Zones[0].ID = plan.Sleds[0].Zones[0].ID
		other.Sleds[0].Zones[0].Address = "127.0.0.1:13221"
		_, err := ds.RackSetUp(ctx, uuid.Nil, other, now)
		if !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "sled "+a.String()+"'s zones differ") {
			t.Fatalf("another plan: %v, want ErrConflict naming sled %s", err, a)
		}
		replicas, err := ds.NexusZoneList(ctx)
		if err != nil || len(replicas) != 1 || replicas[0].InternalAddress != "127.0.0.1:12221" {
			t.Fatalf("replicas after the refused plan: %+v, %v; want the first plan's one", replicas, err)
		}
	})
}

// A plan no sled ever took (one a sled refused) ran nowhere: a corrected
// plan replaces it.
func TestZ11_APlanNoSledTookIsReplacedByTheNextOne(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		a := uuid.New()
		refused := rackPlan(a)
		if _, err := ds.RackSetUp(ctx, uuid.Nil, refused, now); err != nil {
			t.Fatal(err)
		}
		if err := ds.SledZonesPushed(ctx, a, 1, errors.New("the sled refused it"), now); err != nil {
			t.Fatal(err)
		}
		fixed := rackPlan(a)
		if recorded, err := ds.RackSetUp(ctx, uuid.Nil, fixed, now); err != nil || !recorded {
			t.Fatalf("the corrected plan: recorded %v, %v; want it recorded", recorded, err)
		}
		replicas, err := ds.NexusZoneList(ctx)
		if err != nil || len(replicas) != 1 || replicas[0].ID != fixed.Sleds[0].Zones[0].ID {
			t.Fatalf("replicas %+v, %v; want the corrected plan's only", replicas, err)
		}
		cfg, err := ds.SledZonesGet(ctx, a)
		if err != nil || len(cfg.Zones) != 1 || cfg.Zones[0].ID != fixed.Sleds[0].Zones[0].ID {
			t.Fatalf("sled %s's config %+v, %v; want the corrected plan's", a, cfg, err)
		}
	})
}

// Rack setups racing on one empty database: one records its plan, the
// others find it recorded; none fails.
func TestZ11_RackSetupsRacingOnAnEmptyDatabaseRecordOnePlan(t *testing.T) {
	db := racktest.NewDatabase(t, datastore.Postgres)
	plan := rackPlan(uuid.New(), uuid.New())
	const setups = 8
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		recorded int
		errs     []error
	)
	stores := make([]*datastore.DataStore, setups)
	for i := range stores {
		stores[i] = db.Open(t)
	}
	start := make(chan struct{})
	for i := range setups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ok, err := stores[i].RackSetUp(ctx, uuid.Nil, plan, now)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				recorded++
			}
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if recorded != 1 || len(errs) > 0 {
		t.Fatalf("%d of %d setups recorded the plan (want 1); errors: %v", recorded, setups, errs)
	}
}
