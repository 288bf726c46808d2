// Package faults injects zone faults into any zone runtime (V7): starts and
// shutdown steps that fail, halts that hang (as a zone whose processes will
// not die), and latency. It wraps the runtime the reconciler drives, the
// simulated one and the process one alike, so that a test can make a real
// nexus zone refuse to go away. SledAgentSim drives it; restarting the agent
// clears every fault.
package faults

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

// AnyZone, as a zone id in a fault, means every zone.
var AnyZone = uuid.Nil

// Runtime is a zone runtime with faults injected before its calls.
type Runtime struct {
	inner reconciler.ZoneRuntime

	mu           sync.Mutex
	startFaults  map[uuid.UUID]*fault
	stepFaults   map[stepKey]*fault
	hangs        map[uuid.UUID]chan struct{}
	startLatency time.Duration
	stepLatency  time.Duration
}

var _ reconciler.ZoneRuntime = (*Runtime)(nil)

// fault fails the next count attempts with message.
type fault struct {
	count   int
	message string
}

type stepKey struct {
	zone uuid.UUID
	step reconciler.ShutdownStep
}

// Wrap returns inner with no fault yet.
func Wrap(inner reconciler.ZoneRuntime) *Runtime {
	return &Runtime{inner: inner, startFaults: map[uuid.UUID]*fault{}, stepFaults: map[stepKey]*fault{},
		hangs: map[uuid.UUID]chan struct{}{}}
}

// Zones implements reconciler.ZoneRuntime.
func (r *Runtime) Zones(ctx context.Context) ([]reconciler.PresentZone, error) {
	return r.inner.Zones(ctx)
}

// StartZone implements reconciler.ZoneRuntime.
func (r *Runtime) StartZone(ctx context.Context, zone zoneconfig.Zone) error {
	r.mu.Lock()
	latency := r.startLatency
	err := take(r.startFaults, zone.ID, zone.ID, func() string { return fmt.Sprintf("injected fault: start of zone %s fails", zone.ID) })
	r.mu.Unlock()
	if err := backoff.Sleep(ctx, latency); err != nil {
		return err
	}
	if err != nil {
		return err
	}
	return r.inner.StartZone(ctx, zone)
}

// Shutdown implements reconciler.ZoneRuntime.
func (r *Runtime) Shutdown(ctx context.Context, id uuid.UUID, step reconciler.ShutdownStep) error {
	r.mu.Lock()
	latency := r.stepLatency
	var hang chan struct{}
	if step == reconciler.StepHaltAndRemove {
		if hang = r.hangs[id]; hang == nil {
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
	err := take(r.stepFaults, stepKey{id, step}, stepKey{AnyZone, step},
		func() string { return fmt.Sprintf("injected fault: %s of zone %s fails", step, id) })
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return r.inner.Shutdown(ctx, id, step)
}

// take consumes one attempt of the fault registered under key, or else
// under any, the wildcard key.
func take[K comparable](faults map[K]*fault, key, any K, defaultMessage func() string) error {
	f, ok := faults[key]
	if !ok {
		if f, ok = faults[any]; !ok {
			return nil
		}
		key = any
	}
	if f.count--; f.count <= 0 {
		delete(faults, key)
	}
	if f.message != "" {
		return errors.New(f.message)
	}
	return errors.New(defaultMessage())
}

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
	r.stepFaults[stepKey{zone, step}] = &fault{count: count, message: message}
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
