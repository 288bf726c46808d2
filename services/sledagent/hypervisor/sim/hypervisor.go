package sim

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/services/sledagent/vmm"
)

var _ vmm.Hypervisor = (*Hypervisor)(nil)

// Mode is how transitions complete.
type Mode int

const (
	ModeAuto Mode = iota + 1
	ModeExplicit
)

// AnyVMM, as a VMM id in a fault, means every VMM.
var AnyVMM = uuid.Nil

// peerAction is what a migration target says to its source before a step.
type peerAction int

const (
	peerNone peerAction = iota
	peerBegin
	peerFinish
)

type step struct {
	state        vmm.State
	migrationIn  *vmm.MigrationChange
	migrationOut *vmm.MigrationChange
	peer         peerAction
}

type machine struct {
	// deliver is held from computing a transition of this VMM until the
	// observer has seen it, so its observations never overtake each other;
	// other VMMs go on meanwhile, even while this one talks to a peer.
	deliver     sync.Mutex
	incarnation uint64
	state       vmm.State
	pending     []step
	migration   *vmm.MigrationTarget // set on a migration target
	pulling     bool                 // a migration target whose source has begun sending
	sending     uuid.UUID            // the migration a source is sending, if any
	timer       *time.Timer
	timerSeq    uint64 // invalidates a timer that fired after being replaced
}

// effective is where the VMM is heading: the end of its pending path.
func (m *machine) effective() vmm.State {
	if len(m.pending) > 0 {
		return m.pending[len(m.pending)-1].state
	}
	return m.state
}

type requestFault struct {
	count   int
	code    codes.Code
	message string
}

// Hypervisor is the simulated hypervisor of one sled.
type Hypervisor struct {
	// running counts transitions and best-effort peer calls under way, so
	// Close can wait for them.
	running sync.WaitGroup

	mu            sync.Mutex
	closed        bool
	incarnations  uint64
	observer      func(uuid.UUID, vmm.Observation)
	peer          MigrationPeer
	mode          Mode
	delay         time.Duration
	vms           map[uuid.UUID]*machine
	hangStop      map[uuid.UUID]bool
	requestFaults map[uuid.UUID]*requestFault
}

// New returns a hypervisor in mode, with transitions taking delay in AUTO;
// peer carries migrations to other sleds' hypervisors.
func New(mode Mode, delay time.Duration, peer MigrationPeer) *Hypervisor {
	return &Hypervisor{
		peer:          peer,
		mode:          mode,
		delay:         delay,
		vms:           map[uuid.UUID]*machine{},
		hangStop:      map[uuid.UUID]bool{},
		requestFaults: map[uuid.UUID]*requestFault{},
	}
}

// SetObserver registers the function told of every completed transition.
func (h *Hypervisor) SetObserver(observe func(uuid.UUID, vmm.Observation)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.observer = observe
}

// Launch implements vmm.Hypervisor.
func (h *Hypervisor) Launch(id uuid.UUID, _ vmm.Spec, migration *vmm.MigrationTarget) (uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, errors.New("hypervisor is shut down")
	}
	h.incarnations++
	h.vms[id] = &machine{incarnation: h.incarnations, state: vmm.StateStarting, migration: migration}
	return h.incarnations, nil
}

// Close stops every pending transition and waits for transitions and peer
// calls under way; nothing is observed afterwards. The VMMs die with it, as
// they do with a sled-agent process.
func (h *Hypervisor) Close() {
	h.mu.Lock()
	h.closed = true
	for _, m := range h.vms {
		h.stopTimerLocked(m)
	}
	h.mu.Unlock()
	h.running.Wait()
}

// Request implements vmm.Hypervisor.
func (h *Hypervisor) Request(id uuid.UUID, target vmm.Target) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.takeRequestFault(id); err != nil {
		return err
	}
	m, ok := h.vms[id]
	if !ok {
		return fmt.Errorf("%w: %s", vmm.ErrNoSuchVMM, id)
	}
	eff := m.effective()
	unreachable := func(why string) error {
		return fmt.Errorf("%w: VMM %s is %s (heading to %s) and cannot go to %s: %s",
			vmm.ErrUnreachableTarget, id, m.state, eff, target, why)
	}
	var path []step
	switch target {
	case vmm.TargetRunning:
		switch {
		case m.migration != nil && eff == vmm.StateStarting:
			return unreachable("a migration target starts by migrating in")
		case eff == vmm.StateStarting:
			path = []step{{state: vmm.StateRunning}}
		case eff == vmm.StateRunning:
		default:
			return unreachable("only a starting VMM can start running")
		}
	case vmm.TargetStopped:
		switch eff {
		case vmm.StateStarting, vmm.StateRunning:
			path = []step{{state: vmm.StateStopping}, {state: vmm.StateStopped}, {state: vmm.StateDestroyed}}
		case vmm.StateFailed:
			path = []step{{state: vmm.StateDestroyed}}
		case vmm.StateStopping, vmm.StateStopped, vmm.StateDestroyed:
		default:
			return unreachable("a migrating VMM cannot be stopped")
		}
	case vmm.TargetReboot:
		switch {
		case eff != vmm.StateRunning:
			return unreachable("only a running VMM can reboot")
		case slices.ContainsFunc(m.pending, func(s step) bool { return s.state == vmm.StateRebooting }):
		default:
			path = []step{{state: vmm.StateRebooting}, {state: vmm.StateRunning}}
		}
	case vmm.TargetMigrationTarget:
		switch {
		case m.migration == nil:
			return unreachable("it was not registered as a migration target")
		case eff == vmm.StateStarting:
			id := m.migration.MigrationID
			path = []step{
				{state: vmm.StateMigrating, peer: peerBegin,
					migrationIn: &vmm.MigrationChange{ID: id, State: vmm.MigrationInProgress}},
				{state: vmm.StateRunning, peer: peerFinish,
					migrationIn: &vmm.MigrationChange{ID: id, State: vmm.MigrationCompleted}},
			}
		case eff == vmm.StateMigrating || eff == vmm.StateRunning:
		default:
			return unreachable("the migration can no longer begin")
		}
	default:
		return fmt.Errorf("%w: unknown target %d", vmm.ErrUnreachableTarget, target)
	}
	if len(path) > 0 {
		h.appendLocked(id, m, path...)
	}
	return nil
}

// Terminate implements vmm.Hypervisor: the VMM is gone at once, whatever it
// was doing, and none of its pending transitions will be reported. A target
// killed while pulling a guest drops the connection to its source, which
// then resumes running, as a real source Propolis would.
func (h *Hypervisor) Terminate(id uuid.UUID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.vms[id]
	if !ok {
		return
	}
	h.stopTimerLocked(m)
	delete(h.vms, id)
	if m.pulling {
		h.abandonPullLocked(*m.migration)
	}
}

// abandonPullLocked tells a source, in the background and on a best-effort
// basis, that its target is gone, as the dropped connection would tell a
// real source Propolis; the source then resumes running.
func (h *Hypervisor) abandonPullLocked(mt vmm.MigrationTarget) {
	if h.peer == nil || h.closed {
		return
	}
	h.running.Add(1)
	go func() {
		defer h.running.Done()
		h.peer.EndMigrationOut(mt.SourceSledAddress, mt.SourceVMM, mt.MigrationID, false) //nolint:errcheck // best effort
	}()
}

// BeginMigrationOut is the source side of a migration: a target has started
// pulling the guest of VMM source.
func (h *Hypervisor) BeginMigrationOut(source, migration uuid.UUID) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.vms[source]
	switch {
	case !ok:
		return fmt.Errorf("%w: %s", vmm.ErrNoSuchVMM, source)
	case m.sending == migration:
		return nil
	case m.sending != uuid.Nil || m.effective() != vmm.StateRunning:
		return fmt.Errorf("%w: VMM %s is %s and cannot send migration %s", vmm.ErrUnreachableTarget, source, m.effective(), migration)
	}
	m.sending = migration
	h.appendLocked(source, m, step{state: vmm.StateMigrating,
		migrationOut: &vmm.MigrationChange{ID: migration, State: vmm.MigrationInProgress}})
	return nil
}

// EndMigrationOut is the source side of a migration's end: the guest now
// runs on the target (the source is destroyed) or the pull failed (the
// source resumes).
func (h *Hypervisor) EndMigrationOut(source, migration uuid.UUID, succeeded bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.vms[source]
	switch {
	case !ok:
		return fmt.Errorf("%w: %s", vmm.ErrNoSuchVMM, source)
	case m.sending != migration:
		return fmt.Errorf("%w: VMM %s is not sending migration %s", vmm.ErrUnreachableTarget, source, migration)
	}
	m.sending = uuid.Nil
	if succeeded {
		h.appendLocked(source, m, step{state: vmm.StateDestroyed,
			migrationOut: &vmm.MigrationChange{ID: migration, State: vmm.MigrationCompleted}})
	} else {
		h.appendLocked(source, m, step{state: vmm.StateRunning,
			migrationOut: &vmm.MigrationChange{ID: migration, State: vmm.MigrationFailed}})
	}
	return nil
}

func (h *Hypervisor) appendLocked(id uuid.UUID, m *machine, path ...step) {
	m.pending = append(m.pending, path...)
	if h.mode == ModeAuto && m.timer == nil {
		h.scheduleLocked(id, m)
	}
}

func (h *Hypervisor) scheduleLocked(id uuid.UUID, m *machine) {
	m.timerSeq++
	seq := m.timerSeq
	m.timer = time.AfterFunc(h.delay, func() { h.advance(id, seq) })
}

func (h *Hypervisor) stopTimerLocked(m *machine) {
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	m.timerSeq++
}

// stalledLocked reports whether the VMM's next transition is held back by a
// fault: an unresponsive Propolis never finishes stopping.
func (h *Hypervisor) stalledLocked(id uuid.UUID, m *machine) bool {
	return m.state == vmm.StateStopping && (h.hangStop[id] || h.hangStop[AnyVMM])
}

// advance completes the VMM's next transition. timerSeq is the sequence of
// the timer that fired, or 0 for an explicit step.
func (h *Hypervisor) advance(id uuid.UUID, timerSeq uint64) bool {
	h.mu.Lock()
	m, ok := h.vms[id]
	if !ok || h.closed {
		h.mu.Unlock()
		return false
	}
	h.running.Add(1)
	h.mu.Unlock()
	defer h.running.Done()

	m.deliver.Lock()
	defer m.deliver.Unlock()
	h.mu.Lock()
	if h.closed || h.vms[id] != m {
		h.mu.Unlock()
		return false
	}
	if timerSeq != 0 {
		if timerSeq != m.timerSeq {
			h.mu.Unlock()
			return false // replaced by a later timer or a mode change
		}
		m.timer = nil
	}
	if len(m.pending) == 0 || m.state == vmm.StateDestroyed || h.stalledLocked(id, m) {
		h.mu.Unlock()
		return false
	}
	next := m.pending[0]
	if next.peer != peerNone {
		// Talk to the source without holding the lock: it may be a VMM of
		// this very hypervisor.
		mt := *m.migration
		h.mu.Unlock()
		err := h.tellSource(next.peer, id, mt)
		h.mu.Lock()
		begun := next.peer == peerBegin
		if h.closed || h.vms[id] != m {
			// Terminated during the call: a source that began sending must
			// hear that the pull is off, or it stays migrating for ever.
			if begun {
				h.abandonPullLocked(mt)
			}
			h.mu.Unlock()
			return false
		}
		if err != nil {
			if begun {
				// The begin may have landed although its answer was lost.
				h.abandonPullLocked(mt)
			}
			next = step{state: vmm.StateFailed,
				migrationIn: &vmm.MigrationChange{ID: mt.MigrationID, State: vmm.MigrationFailed}}
			m.pending = []step{next}
		}
		m.pulling = err == nil && begun
	}
	m.pending = m.pending[1:]
	m.state = next.state
	if next.state == vmm.StateDestroyed {
		// The machine stays as a tombstone until the observer has seen the
		// end: a request racing the observation finds a destroyed VMM (stop
		// is then a no-op), never an unknown one, which would read as "gone".
		h.stopTimerLocked(m)
		m.pending = nil
	} else if len(m.pending) > 0 && h.mode == ModeAuto && m.timer == nil {
		h.scheduleLocked(id, m)
	}
	observe := h.observer
	h.mu.Unlock()
	if observe != nil {
		observe(id, vmm.Observation{Incarnation: m.incarnation, State: next.state,
			MigrationIn: next.migrationIn, MigrationOut: next.migrationOut})
	}
	if next.state == vmm.StateDestroyed {
		h.mu.Lock()
		if h.vms[id] == m {
			delete(h.vms, id)
		}
		h.mu.Unlock()
	}
	return true
}

func (h *Hypervisor) tellSource(action peerAction, target uuid.UUID, mt vmm.MigrationTarget) error {
	if h.peer == nil {
		return errors.New("no migration peer configured")
	}
	if action == peerBegin {
		return h.peer.BeginMigrationOut(mt.SourceSledAddress, mt.SourceVMM, mt.MigrationID, target)
	}
	return h.peer.EndMigrationOut(mt.SourceSledAddress, mt.SourceVMM, mt.MigrationID, true)
}

// Step completes pending transitions: the next one of vmmID (AnyVMM: of
// every VMM, in id order), or, with drain, every one until none is left or
// only stalled ones remain. It returns how many transitions completed.
func (h *Hypervisor) Step(vmmID uuid.UUID, drain bool) int {
	total := 0
	for {
		progressed := 0
		for _, id := range h.targets(vmmID) {
			if h.advance(id, 0) {
				progressed++
			}
		}
		total += progressed
		if !drain || progressed == 0 {
			return total
		}
	}
}

func (h *Hypervisor) targets(vmmID uuid.UUID) []uuid.UUID {
	if vmmID != AnyVMM {
		return []uuid.UUID{vmmID}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]uuid.UUID, 0, len(h.vms))
	for id := range h.vms {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
	return ids
}

// SetMode switches between AUTO and EXPLICIT; a positive delay also sets
// the AUTO transition time. Switching to AUTO resumes pending transitions.
func (h *Hypervisor) SetMode(mode Mode, delay time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mode = mode
	if delay > 0 {
		h.delay = delay
	}
	h.rescheduleLocked()
}

func (h *Hypervisor) rescheduleLocked() {
	for id, m := range h.vms {
		h.stopTimerLocked(m)
		if h.mode == ModeAuto && len(m.pending) > 0 {
			h.scheduleLocked(id, m)
		}
	}
}

// HangStop makes the VMM (AnyVMM: every VMM) stay stopping once it gets
// there, until ClearFaults.
func (h *Hypervisor) HangStop(id uuid.UUID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hangStop[id] = true
}

// FailRequests makes the next count requests to the VMM (AnyVMM: to any VMM)
// fail with code and message.
func (h *Hypervisor) FailRequests(id uuid.UUID, count int, code codes.Code, message string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requestFaults[id] = &requestFault{count: count, code: code, message: message}
}

func (h *Hypervisor) takeRequestFault(id uuid.UUID) error {
	for _, key := range []uuid.UUID{id, AnyVMM} {
		f, ok := h.requestFaults[key]
		if !ok {
			continue
		}
		f.count--
		if f.count <= 0 {
			delete(h.requestFaults, key)
		}
		msg := f.message
		if msg == "" {
			msg = fmt.Sprintf("injected fault: request to VMM %s fails", id)
		}
		return status.Error(f.code, msg)
	}
	return nil
}

// ClearFaults removes every fault; stalled stops resume.
func (h *Hypervisor) ClearFaults() {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.hangStop)
	clear(h.requestFaults)
	h.rescheduleLocked()
}
