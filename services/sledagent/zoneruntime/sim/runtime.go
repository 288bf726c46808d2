package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

var _ reconciler.ZoneRuntime = (*Runtime)(nil)

// zoneRecord is one simulated zone as the journal stores it. A zone exists
// until its last shutdown step removes the record.
type zoneRecord struct {
	Zone           zoneconfig.Zone `json:"zone"`
	MetricsTracked bool            `json:"metrics_tracked"`
	Running        bool            `json:"running"`
	// StartedAt tells an adopted zone (same time) from a restarted one.
	StartedAt time.Time `json:"started_at"`
}

// fault fails the next count attempts with message.
type fault struct {
	count   int
	message string
}

// AnyZone, as a zone id in a fault, means every zone.
var AnyZone = uuid.Nil

type shutdownKey struct {
	zone uuid.UUID
	step reconciler.ShutdownStep
}

// Runtime is the simulated zone runtime.
type Runtime struct {
	mu           sync.Mutex
	journal      *journal
	zones        map[uuid.UUID]*zoneRecord
	startFaults  map[uuid.UUID]*fault
	stepFaults   map[shutdownKey]*fault
	hangs        map[uuid.UUID]chan struct{}
	startLatency time.Duration
	stepLatency  time.Duration
}

// Open returns the runtime whose zones live in dir, with the zones a previous
// process left there.
func Open(dir string) (*Runtime, error) {
	j, zones, err := openJournal(dir)
	if err != nil {
		return nil, err
	}
	return &Runtime{
		journal:     j,
		zones:       zones,
		startFaults: map[uuid.UUID]*fault{},
		stepFaults:  map[shutdownKey]*fault{},
		hangs:       map[uuid.UUID]chan struct{}{},
	}, nil
}

// Close releases the journal; the zones stay for the next Open.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.journal.close()
}

// InspectedZone is a zone as the runtime's state directory shows it.
type InspectedZone struct {
	ID        uuid.UUID
	Kind      zoneconfig.Kind
	Running   bool
	ResumeAt  reconciler.ShutdownStep
	StartedAt time.Time
}

// Inspect reads the zones in a runtime's state directory without opening the
// runtime, so that tests and operators can check what really runs while an
// agent owns the directory.
func Inspect(dir string) (map[uuid.UUID]InspectedZone, error) {
	zones, err := replay(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID]InspectedZone, len(zones))
	for id, rec := range zones {
		out[id] = InspectedZone{ID: id, Kind: rec.Zone.Kind, Running: rec.Running,
			ResumeAt: rec.resumeAt(), StartedAt: rec.StartedAt}
	}
	return out, nil
}

// Zones implements reconciler.ZoneRuntime.
func (r *Runtime) Zones(context.Context) ([]reconciler.PresentZone, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]reconciler.PresentZone, 0, len(r.zones))
	for _, rec := range r.zones {
		out = append(out, reconciler.PresentZone{Zone: rec.Zone, ResumeAt: rec.resumeAt()})
	}
	slices.SortFunc(out, func(a, b reconciler.PresentZone) int {
		return strings.Compare(a.Zone.ID.String(), b.Zone.ID.String())
	})
	return out, nil
}

func (rec *zoneRecord) resumeAt() reconciler.ShutdownStep {
	switch {
	case rec.MetricsTracked:
		return reconciler.StepUntrackMetrics
	case rec.Running:
		return reconciler.StepHaltAndRemove
	default:
		return reconciler.StepCleanUp
	}
}

// StartZone implements reconciler.ZoneRuntime.
func (r *Runtime) StartZone(ctx context.Context, zone zoneconfig.Zone) error {
	r.mu.Lock()
	latency := r.startLatency
	err := takeFault(r.startFaults, zone.ID, func(id uuid.UUID) string {
		return fmt.Sprintf("injected fault: start of zone %s fails", id)
	})
	r.mu.Unlock()
	if err := backoff.Sleep(ctx, latency); err != nil {
		return err
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := &zoneRecord{Zone: zone, MetricsTracked: true, Running: true, StartedAt: time.Now().UTC()}
	if err := r.journal.put(rec); err != nil {
		return err
	}
	r.zones[zone.ID] = rec
	return nil
}

// Shutdown implements reconciler.ZoneRuntime.
func (r *Runtime) Shutdown(ctx context.Context, id uuid.UUID, step reconciler.ShutdownStep) error {
	r.mu.Lock()
	latency := r.stepLatency
	var hang chan struct{}
	if step == reconciler.StepHaltAndRemove {
		hang = r.hangs[id]
		if hang == nil {
			hang = r.hangs[AnyZone]
		}
	}
	r.mu.Unlock()
	if err := backoff.Sleep(ctx, latency); err != nil {
		return err
	}
	if hang != nil {
		select {
		case <-hang:
		case <-ctx.Done():
			return fmt.Errorf("halting zone %s: %w", id, ctx.Err())
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := takeFault(r.stepFaults, shutdownKey{id, step}, func(shutdownKey) string {
		return fmt.Sprintf("injected fault: %s of zone %s fails", step, id)
	}); err != nil {
		return err
	}
	if err := takeFault(r.stepFaults, shutdownKey{AnyZone, step}, func(shutdownKey) string {
		return fmt.Sprintf("injected fault: %s of zone %s fails", step, id)
	}); err != nil {
		return err
	}
	rec, ok := r.zones[id]
	if !ok {
		return nil // already gone (Z7)
	}
	next := *rec
	switch step {
	case reconciler.StepUntrackMetrics:
		next.MetricsTracked = false
	case reconciler.StepHaltAndRemove:
		next.MetricsTracked, next.Running = false, false
	case reconciler.StepCleanUp:
		if next.Running {
			return fmt.Errorf("zone %s is still running; it must be halted before clean-up", id)
		}
		if err := r.journal.remove(id); err != nil {
			return err
		}
		delete(r.zones, id)
		r.journal.compactIfLarge(r.zones)
		return nil
	default:
		return fmt.Errorf("unknown shutdown step %d", step)
	}
	if err := r.journal.put(&next); err != nil {
		return err
	}
	r.zones[id] = &next
	return nil
}

// takeFault consumes one attempt of the fault registered under key.
func takeFault[K comparable](faults map[K]*fault, key K, defaultMessage func(K) string) error {
	f, ok := faults[key]
	if !ok {
		return nil
	}
	f.count--
	if f.count <= 0 {
		delete(faults, key)
	}
	if f.message != "" {
		return errors.New(f.message)
	}
	return errors.New(defaultMessage(key))
}
