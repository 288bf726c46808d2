package vmm

import (
	"container/list"
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
	// Publish hands over an update; a VMM's updates reach nexus in
	// generation order, and one not yet delivered may be replaced by a
	// newer one of the same VMM.
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
	v := View{VMM: id, Instance: r.instance, Runtime: r.runtime, MigrationIn: r.migrationIn, MigrationOut: r.migrationOut}
	return v.clone()
}

// clone returns v with its own copies of the migration sides, so callers
// cannot reach into the manager's records.
func (v View) clone() View {
	if v.MigrationIn != nil {
		m := *v.MigrationIn
		v.MigrationIn = &m
	}
	if v.MigrationOut != nil {
		m := *v.MigrationOut
		v.MigrationOut = &m
	}
	return v
}

// EndedLimit is how many ended VMMs the manager remembers; past it, the one
// that ended longest ago is forgotten first.
const EndedLimit = 4096

// endedVMM is what the manager remembers of a VMM that ended on this sled
// (destroyed, failed or unregistered): its final view, which never changes.
type endedVMM struct {
	final View
	elem  *list.Element // in Manager.endedOrder
}

// Manager is the table of VMMs registered on this sled, and the memory of
// the ones that ended here.
type Manager struct {
	log        *zap.Logger
	hypervisor Hypervisor
	publisher  Publisher

	mu   sync.Mutex
	vmms map[uuid.UUID]*record
	// ended holds the EndedLimit most recently ended VMMs; an id is never
	// both registered and ended. endedOrder lists their ids, oldest first.
	ended      map[uuid.UUID]*endedVMM
	endedOrder *list.List
}

// NewManager returns an empty manager. The caller registers m.Observe as the
// hypervisor's observer.
func NewManager(h Hypervisor, p Publisher, log *zap.Logger) *Manager {
	return &Manager{log: log, hypervisor: h, publisher: p, vmms: map[uuid.UUID]*record{},
		ended: map[uuid.UUID]*endedVMM{}, endedOrder: list.New()}
}

// endLocked moves a VMM from the table to the ended VMMs, with r's runtime
// as its final one, forgetting the oldest ended VMM past EndedLimit.
func (m *Manager) endLocked(id uuid.UUID, r *record) {
	delete(m.vmms, id)
	e := &endedVMM{final: r.view(id)}
	e.elem = m.endedOrder.PushBack(id)
	m.ended[id] = e
	for m.endedOrder.Len() > EndedLimit {
		oldest := m.endedOrder.Remove(m.endedOrder.Front()).(uuid.UUID)
		delete(m.ended, oldest)
	}
}

// endedError is EnsureState's answer for a target other than stopped of an
// ended VMM: it can never get there. It is not ErrNoSuchVMM, which nexus
// reads as "the sled forgot the VMM".
func endedError(id uuid.UUID, e *endedVMM, target Target) error {
	return fmt.Errorf("%w: VMM %s has ended (%s at generation %d) and cannot go to %s",
		ErrUnreachableTarget, id, e.final.Runtime.State, e.final.Runtime.Generation, target)
}

// EnsureRegistered creates the VMM, or returns its runtime if it is already
// registered the same way (V1). A VMM that ended here is not launched again:
// for the same instance its final runtime is the answer (a saga re-run after
// a crash must not bring a terminated VMM back; nexus never reuses VMM ids),
// for another instance it is ErrAlreadyExists.
func (m *Manager) EnsureRegistered(reg Registration) (Runtime, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.ended[reg.VMM]; ok {
		if e.final.Instance != reg.Instance {
			return Runtime{}, fmt.Errorf("%w: VMM %s belonged to instance %s, not %s, and has ended",
				ErrAlreadyExists, reg.VMM, e.final.Instance, reg.Instance)
		}
		m.log.Info("registration of an ended VMM; answering its final runtime, not launching it",
			zap.Stringer("vmm_id", reg.VMM), zap.Stringer("state", e.final.Runtime.State),
			zap.Uint64("generation", e.final.Runtime.Generation))
		return e.final.Runtime, nil
	}
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
// runtime (V2). The move completes asynchronously. A VMM that ended here has
// reached stopped for good: stopping it answers its final runtime, any other
// target wraps ErrUnreachableTarget. Only a VMM the sled does not know (never
// did, or forgot) is ErrNoSuchVMM.
func (m *Manager) EnsureState(id uuid.UUID, target Target) (Runtime, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.ended[id]; ok {
		if target == TargetStopped {
			return e.final.Runtime, nil
		}
		return Runtime{}, endedError(id, e, target)
	}
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
// destroyed, with the next generation (V3). Once it returns, nothing more is
// published about the VMM.
//
// A VMM that already ended here (destroyed, failed or unregistered) is not
// unknown: its final runtime is returned again, unchanged, and nothing is
// published for it. Nexus writes it through its generation guard, a no-op if
// the publication of that end already arrived, the end itself if it was lost
// or is still queued; updates already queued are still delivered (they carry
// the migration outcome this answer cannot). It returns nil only for a VMM
// the sled does not know: never did, or forgot (Forget, a restart, or past
// EndedLimit).
func (m *Manager) EnsureUnregistered(id uuid.UUID) *Runtime {
	m.mu.Lock()
	if e, ok := m.ended[id]; ok {
		final := e.final.Runtime
		m.mu.Unlock()
		m.log.Info("unregistering an ended VMM; answering its final runtime", zap.Stringer("vmm_id", id),
			zap.Stringer("state", final.State), zap.Uint64("generation", final.Generation))
		return &final
	}
	r, ok := m.vmms[id]
	if !ok {
		m.mu.Unlock()
		return nil
	}
	was := r.runtime.State
	m.hypervisor.Terminate(id)
	final := Runtime{State: StateDestroyed, Generation: r.runtime.Generation + 1, TimeUpdated: time.Now().UTC()}
	r.runtime = final
	m.endLocked(id, r)
	// The caller (nexus) records the final runtime itself; anything still
	// queued is older and would only race it. Dropped under the lock, so no
	// caller sees the VMM ended while its older updates are still on their
	// way. Delivery never takes this lock, so waiting for it here cannot
	// deadlock.
	m.publisher.Drop(id)
	m.mu.Unlock()
	m.log.Info("VMM unregistered", zap.Stringer("vmm_id", id), zap.Stringer("was", was),
		zap.Uint64("generation", final.Generation))
	return &final
}

// Forget drops the VMM without terminating it in a way nexus can see and
// without publishing anything: what a sled-agent restart does (V7). A
// restarted sled-agent remembers no ended VMM either, so Forget also drops
// an ended VMM's record and its undelivered updates; either way the VMM is
// unknown afterwards. It reports whether the sled knew the VMM.
func (m *Manager) Forget(id uuid.UUID) bool {
	m.mu.Lock()
	_, registered := m.vmms[id]
	e, ended := m.ended[id]
	switch {
	case registered:
		m.hypervisor.Terminate(id)
		delete(m.vmms, id)
		m.publisher.Drop(id)
	case ended:
		m.endedOrder.Remove(e.elem)
		delete(m.ended, id)
		m.publisher.Drop(id)
	}
	m.mu.Unlock()
	if registered || ended {
		m.log.Warn("VMM forgotten without telling nexus (fault injection)", zap.Stringer("vmm_id", id),
			zap.Bool("had_ended", ended))
	}
	return registered || ended
}

// Observe records a state change the hypervisor reports. Each change bumps
// the generation and is published; a VMM that reaches destroyed or failed
// leaves the table after its final update is queued, and is remembered as
// ended.
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
	switch r.runtime.State {
	case StateDestroyed:
		m.endLocked(id, r)
		m.log.Info("VMM destroyed", zap.Stringer("vmm_id", id), zap.Uint64("generation", r.runtime.Generation))
	case StateFailed:
		// A failed Propolis never runs again; its zone is torn down, as
		// omicron's sled-agent does, so that nothing registered here is a
		// VMM nexus has already unlinked from its instance.
		m.hypervisor.Terminate(id)
		m.endLocked(id, r)
		m.log.Warn("VMM failed; removed", zap.Stringer("vmm_id", id), zap.Uint64("generation", r.runtime.Generation))
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

// Get returns a registered VMM, or the final view of one that ended here.
func (m *Manager) Get(id uuid.UUID) (View, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.ended[id]; ok {
		return e.final.clone(), nil
	}
	r, ok := m.vmms[id]
	if !ok {
		return View{}, fmt.Errorf("%w: %s", ErrNoSuchVMM, id)
	}
	return r.view(id), nil
}

// List returns every registered VMM, sorted by id; never an ended one.
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
