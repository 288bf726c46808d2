package sim

import (
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/sledagent/reconciler"
)

// FailStarts makes the next count starts of zone (AnyZone: of any zone) fail
// with message (empty: a message naming the fault).
func (r *Runtime) FailStarts(zone uuid.UUID, count int, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.startFaults[zone] = &fault{count: count, message: message}
}

// FailShutdownStep makes the next count attempts at step for zone (AnyZone:
// for any zone) fail.
func (r *Runtime) FailShutdownStep(zone uuid.UUID, step reconciler.ShutdownStep, count int, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stepFaults[shutdownKey{zone, step}] = &fault{count: count, message: message}
}

// HangHalt makes halting zone (AnyZone: any zone) block until ReleaseHalt,
// as a zone whose processes will not die would.
func (r *Runtime) HangHalt(zone uuid.UUID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, hung := r.hangs[zone]; !hung {
		r.hangs[zone] = make(chan struct{})
	}
}

// ReleaseHalt lets halts of zone that HangHalt blocked go on.
func (r *Runtime) ReleaseHalt(zone uuid.UUID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, hung := r.hangs[zone]; hung {
		close(ch)
		delete(r.hangs, zone)
	}
}

// SetLatency delays every start and every shutdown step.
func (r *Runtime) SetLatency(start, shutdownStep time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.startLatency, r.stepLatency = start, shutdownStep
}

// ClearFaults removes every fault and releases every hung halt.
func (r *Runtime) ClearFaults() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.startFaults)
	clear(r.stepFaults)
	for _, ch := range r.hangs {
		close(ch)
	}
	clear(r.hangs)
	r.startLatency, r.stepLatency = 0, 0
}

// Vanish removes a zone behind the agent's back, as an operator destroying it
// by hand would: the agent is not told.
func (r *Runtime) Vanish(zone uuid.UUID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.journal.remove(zone); err != nil {
		return err
	}
	delete(r.zones, zone)
	return nil
}
