package vmm

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
)

// Hypervisor is what the manager needs from the thing that runs VMMs. It
// reports every state change of a VMM it launched through the observer the
// manager registers (Manager.Observe), never while a call from the manager
// is in progress on the same goroutine.
type Hypervisor interface {
	// Launch creates the VMM's zone and process, in state starting, and
	// returns its incarnation, which every observation of it carries.
	Launch(id uuid.UUID, spec Spec, migration *MigrationTarget) (uint64, error)
	// Request asks the VMM to move toward target. It fails with an error
	// wrapping ErrUnreachableTarget when the VMM cannot get there.
	Request(id uuid.UUID, target Target) error
	// Terminate kills the VMM and destroys its zone at once, without the
	// guest's cooperation. It never waits for the VMM.
	Terminate(id uuid.UUID)
}

// Publisher delivers VMM updates to nexus (V5).
type Publisher interface {
	// Publish queues an update; updates are delivered in queue order.
	Publish(Update)
	// Drop discards the VMM's queued updates and returns once no delivery
	// of them is in flight.
	Drop(vmm uuid.UUID)
}

type record struct {
	incarnation  uint64
	instance     uuid.UUID
	spec         Spec
	migration    *MigrationTarget
	runtime      Runtime
	migrationIn  *Migration
	migrationOut *Migration
}

func (r *record) view(id uuid.UUID) View {
	v := View{VMM: id, Instance: r.instance, Runtime: r.runtime}
	if r.migrationIn != nil {
		m := *r.migrationIn
		v.MigrationIn = &m
	}
	if r.migrationOut != nil {
		m := *r.migrationOut
		v.MigrationOut = &m
	}
	return v
}

// Manager is the table of VMMs registered on this sled.
type Manager struct {
	log        *zap.Logger
	hypervisor Hypervisor
	publisher  Publisher

	mu   sync.Mutex
	vmms map[uuid.UUID]*record
}

// NewManager returns an empty manager. The caller registers m.Observe as the
// hypervisor's observer.
func NewManager(h Hypervisor, p Publisher, log *zap.Logger) *Manager {
	return &Manager{log: log, hypervisor: h, publisher: p, vmms: map[uuid.UUID]*record{}}
}

// EnsureRegistered creates the VMM, or returns its runtime if it is already
// registered the same way (V1).
func (m *Manager) EnsureRegistered(reg Registration) (Runtime, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.vmms[reg.VMM]; ok {
		if r.instance != reg.Instance {
			return Runtime{}, fmt.Errorf("%w: VMM %s belongs to instance %s, not %s",
				ErrAlreadyExists, reg.VMM, r.instance, reg.Instance)
		}
		if r.spec != reg.Spec || !sameMigration(r.migration, reg.MigrationTarget) {
			return Runtime{}, fmt.Errorf("%w: VMM %s is registered with another spec", ErrAlreadyExists, reg.VMM)
		}
		return r.runtime, nil
	}
	incarnation, err := m.hypervisor.Launch(reg.VMM, reg.Spec, reg.MigrationTarget)
	if err != nil {
		return Runtime{}, err
	}
	r := &record{
		incarnation: incarnation,
		instance:    reg.Instance,
		spec:        reg.Spec,
		migration:   reg.MigrationTarget,
		// Registration is itself a change: nexus's record (at the initial
		// generation) moves to starting under the sled's next generation.
		runtime: Runtime{State: StateStarting, Generation: reg.InitialGeneration + 1, TimeUpdated: time.Now().UTC()},
	}
	if reg.MigrationTarget != nil {
		r.migrationIn = &Migration{ID: reg.MigrationTarget.MigrationID, State: MigrationPending,
			Generation: 1, TimeUpdated: r.runtime.TimeUpdated}
	}
	m.vmms[reg.VMM] = r
	m.publishLocked(reg.VMM, r)
	m.log.Info("VMM registered", zap.Stringer("vmm_id", reg.VMM), zap.Stringer("instance_id", reg.Instance),
		zap.Uint64("generation", r.runtime.Generation))
	return r.runtime, nil
}

func sameMigration(a, b *MigrationTarget) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// EnsureState asks the VMM to move toward target and returns its current
// runtime (V2). The move completes asynchronously.
func (m *Manager) EnsureState(id uuid.UUID, target Target) (Runtime, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.vmms[id]
	if !ok {
		return Runtime{}, fmt.Errorf("%w: %s", ErrNoSuchVMM, id)
	}
	if err := m.hypervisor.Request(id, target); err != nil {
		return Runtime{}, err
	}
	return r.runtime, nil
}

// EnsureUnregistered rudely terminates the VMM and returns its final runtime:
// destroyed, with the next generation (V3). It returns nil for a VMM the sled
// does not know. Once it returns, nothing more is published about the VMM.
func (m *Manager) EnsureUnregistered(id uuid.UUID) *Runtime {
	m.mu.Lock()
	r, ok := m.vmms[id]
	if !ok {
		m.mu.Unlock()
		return nil
	}
	m.hypervisor.Terminate(id)
	delete(m.vmms, id)
	final := Runtime{State: StateDestroyed, Generation: r.runtime.Generation + 1, TimeUpdated: time.Now().UTC()}
	// The caller (nexus) records the final runtime itself; anything still
	// queued is older and would only race it. Dropped under the lock, so a
	// re-registration cannot slip an update in between. Delivery never takes
	// this lock, so waiting for it here cannot deadlock.
	m.publisher.Drop(id)
	m.mu.Unlock()
	m.log.Info("VMM unregistered", zap.Stringer("vmm_id", id), zap.Stringer("was", r.runtime.State),
		zap.Uint64("generation", final.Generation))
	return &final
}

// Forget drops the VMM without terminating it in a way nexus can see and
// without publishing anything: what a sled-agent restart does (V7).
func (m *Manager) Forget(id uuid.UUID) bool {
	m.mu.Lock()
	_, ok := m.vmms[id]
	if ok {
		m.hypervisor.Terminate(id)
		delete(m.vmms, id)
		m.publisher.Drop(id)
	}
	m.mu.Unlock()
	if ok {
		m.log.Warn("VMM forgotten without telling nexus (fault injection)", zap.Stringer("vmm_id", id))
	}
	return ok
}

// Observe records a state change the hypervisor reports. Each change bumps
// the generation and is published; a VMM that reaches destroyed leaves the
// table after its final update is queued.
func (m *Manager) Observe(id uuid.UUID, obs Observation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.vmms[id]
	if !ok || obs.Incarnation != r.incarnation {
		// Unregistered or forgotten meanwhile (perhaps registered again
		// under the same id): this observation is of a VMM that is gone.
		return
	}
	now := time.Now().UTC()
	changed := false
	if obs.State != 0 && obs.State != r.runtime.State {
		r.runtime = Runtime{State: obs.State, Generation: r.runtime.Generation + 1, TimeUpdated: now}
		changed = true
	}
	changed = advanceMigration(&r.migrationIn, obs.MigrationIn, now) || changed
	changed = advanceMigration(&r.migrationOut, obs.MigrationOut, now) || changed
	if !changed {
		return
	}
	m.publishLocked(id, r)
	if r.runtime.State == StateDestroyed {
		delete(m.vmms, id)
		m.log.Info("VMM destroyed", zap.Stringer("vmm_id", id), zap.Uint64("generation", r.runtime.Generation))
	}
}

func advanceMigration(m **Migration, change *MigrationChange, now time.Time) bool {
	switch {
	case change == nil:
		return false
	case *m == nil || (*m).ID != change.ID:
		*m = &Migration{ID: change.ID, State: change.State, Generation: 1, TimeUpdated: now}
		return true
	case (*m).State == change.State:
		return false
	}
	next := **m
	next.State, next.Generation, next.TimeUpdated = change.State, next.Generation+1, now
	*m = &next
	return true
}

func (m *Manager) publishLocked(id uuid.UUID, r *record) {
	v := r.view(id)
	m.publisher.Publish(Update{VMM: id, Runtime: v.Runtime, MigrationIn: v.MigrationIn, MigrationOut: v.MigrationOut})
}

// Get returns a registered VMM.
func (m *Manager) Get(id uuid.UUID) (View, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.vmms[id]
	if !ok {
		return View{}, fmt.Errorf("%w: %s", ErrNoSuchVMM, id)
	}
	return r.view(id), nil
}

// List returns every registered VMM, sorted by id.
func (m *Manager) List() []View {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]View, 0, len(m.vmms))
	for id, r := range m.vmms {
		out = append(out, r.view(id))
	}
	slices.SortFunc(out, func(a, b View) int { return strings.Compare(a.VMM.String(), b.VMM.String()) })
	return out
}
