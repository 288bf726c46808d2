package sim

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

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

// Runtime is the simulated zone runtime. Faults are injected around it
// (zoneruntime/faults), as around any runtime.
type Runtime struct {
	mu      sync.Mutex
	journal *journal
	zones   map[uuid.UUID]*zoneRecord
}

// Open returns the runtime whose zones live in dir, with the zones a previous
// process left there.
func Open(dir string) (*Runtime, error) {
	j, zones, err := openJournal(dir)
	if err != nil {
		return nil, err
	}
	return &Runtime{journal: j, zones: zones}, nil
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
func (r *Runtime) StartZone(_ context.Context, zone zoneconfig.Zone) error {
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
func (r *Runtime) Shutdown(_ context.Context, id uuid.UUID, step reconciler.ShutdownStep) error {
	r.mu.Lock()
	defer r.mu.Unlock()
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
