package reconciler_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

// deafRuntime is a zone runtime whose halt blocks until released and does
// not honour its context, as a runtime stuck in a system call would. It
// counts the halts of each zone running at once.
type deafRuntime struct {
	release chan struct{}

	mu          sync.Mutex
	zones       map[uuid.UUID]reconciler.PresentZone
	halts       int
	halting     map[uuid.UUID]int
	mostHalting int
	starts      int
}

func (d *deafRuntime) Zones(context.Context) ([]reconciler.PresentZone, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []reconciler.PresentZone
	for _, z := range d.zones {
		out = append(out, z)
	}
	return out, nil
}

func (d *deafRuntime) StartZone(_ context.Context, zone zoneconfig.Zone) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.starts++
	d.zones[zone.ID] = reconciler.PresentZone{Zone: zone, ResumeAt: reconciler.StepUntrackMetrics}
	return nil
}

func (d *deafRuntime) Shutdown(_ context.Context, id uuid.UUID, step reconciler.ShutdownStep) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if step == reconciler.StepHaltAndRemove {
		d.halts++
		d.halting[id]++
		d.mostHalting = max(d.mostHalting, d.halting[id])
		d.mu.Unlock()
		<-d.release
		d.mu.Lock()
		d.halting[id]--
	}
	if step == reconciler.StepCleanUp {
		delete(d.zones, id)
	}
	return nil
}

func (d *deafRuntime) counts() (halts, mostHalting, starts int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.halts, d.mostHalting, d.starts
}

// Z5, Z4 against a runtime that ignores the shutdown deadline: the step
// still times out as a failed shutdown and is retried, but the retries
// wait for the call still running rather than halt the zone a second time
// beside it.
func TestZ5_AHungShutdownThatIgnoresItsDeadlineIsNeverRunTwiceAtOnce(t *testing.T) {
	old := zoneconfig.Zone{ID: uuid.New(), Kind: "crucible"}
	added := zoneconfig.Zone{ID: uuid.New(), Kind: "oximeter"}
	rt := &deafRuntime{release: make(chan struct{}), halting: map[uuid.UUID]int{},
		zones: map[uuid.UUID]reconciler.PresentZone{old.ID: {Zone: old, ResumeAt: reconciler.StepUntrackMetrics}}}
	rec, err := reconciler.New(rt, reconciler.Config{
		Retry:           backoff.Policy{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Jitter: 0.5},
		ShutdownTimeout: 50 * time.Millisecond,
	}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Start(context.Background(), &zoneconfig.Config{Generation: 1, Zones: []zoneconfig.Zone{added}}); err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			close(rt.release)
		}
		rec.Stop()
	}()

	testutil.WaitFor(t, 10*time.Second, func() error {
		_, last := rec.Snapshot()
		if last == nil || len(last.Zones) != 1 || last.Zones[0].Zone.ID != old.ID {
			return fmt.Errorf("last pass %+v, want only the zone being shut down", last)
		}
		z := last.Zones[0]
		if z.State != reconciler.ZonePartiallyShutDown || z.Step != reconciler.StepHaltAndRemove ||
			!strings.Contains(z.Err, "timed out") {
			return fmt.Errorf("zone %+v, want its halt timed out", z)
		}
		if z.Attempts < 4 {
			return fmt.Errorf("%d timed-out attempts so far, waiting for 4", z.Attempts)
		}
		return nil
	})
	if halts, most, starts := rt.counts(); halts != 1 || most != 1 || starts != 0 {
		t.Fatalf("while the halt hung: %d halts called, at most %d at once, %d starts; want 1, 1, 0", halts, most, starts)
	}

	close(rt.release)
	released = true
	testutil.WaitFor(t, 10*time.Second, func() error {
		_, last := rec.Snapshot()
		if len(last.Zones) != 1 || last.Zones[0].Zone.ID != added.ID || last.Zones[0].Err != "" {
			return fmt.Errorf("last pass %+v, want only the added zone, running", last)
		}
		return nil
	})
	if _, most, _ := rt.counts(); most != 1 {
		t.Fatalf("%d halts of one zone ran at once", most)
	}
}
