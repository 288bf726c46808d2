package sagas

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/sledclient"
)

// markUnwound marks a saga's VMM saga_unwound, after whatever the sled said
// last: nexus owns the generation again once the VMM is unregistered. A VMM
// the action never inserted is nothing to undo.
func (d Deps) markUnwound(ctx context.Context, id uuid.UUID) error {
	_, err := d.DS.VMMRewrite(ctx, id, func(v model.VMM) (model.VMMRuntime, bool, error) {
		if v.Runtime.State == model.VMMSagaUnwound {
			return v.Runtime, false, nil
		}
		return model.VMMRuntime{State: model.VMMSagaUnwound, Generation: v.Runtime.Generation + 1, TimeUpdated: time.Now()}, true, nil
	})
	if errors.Is(err, model.ErrNotFound) {
		return nil
	}
	return err
}

// record writes a runtime a sled-agent answered through the guard; a stale
// one is simply not written.
func (d Deps) record(ctx context.Context, vmm uuid.UUID, rt model.VMMRuntime, err error) error {
	if err != nil {
		return err
	}
	_, err = d.DS.VMMUpdateRuntime(ctx, vmm, rt)
	return err
}

// register registers a VMM with its sled-agent and records the answer. A
// force-terminate may have ended the VMM in the database while the request
// was on its way (its EnsureUnregistered found nothing to remove, so it
// wrote the VMM's end itself): the VMM is then unregistered again, its
// recorded end stands, and the node fails, so its saga unwinds instead of
// leaving a VMM running on a sled that no instance points at (F10).
//
// The node is the registration: when it fails, the engine undoes the nodes
// before it, not this one. So whatever makes it fail after the sled may
// have taken the VMM (an answer lost on the way, a database error while
// recording it) is undone here, before the error is returned; a sled that
// cannot be reached for that leaves the VMM to the orphan reaper (N12).
func (d Deps) register(ctx context.Context, sled uuid.UUID, r sledclient.Registration) (err error) {
	defer func() {
		if err != nil {
			d.forgetRegistration(ctx, sled, r.VMM)
		}
	}()
	rt, err := d.Sleds.EnsureRegistered(ctx, sled, r)
	if err := d.record(ctx, r.VMM, rt, err); err != nil {
		return err
	}
	v, err := d.DS.VMMGet(ctx, r.VMM)
	if err != nil {
		return err
	}
	if !v.Runtime.State.Terminal() {
		return nil
	}
	// The sled's answer is not written: the end recorded first stands.
	return fmt.Errorf("%w: VMM %s was terminated (%s) while it was being registered", model.ErrInstanceBusy, r.VMM, v.Runtime.State)
}

// forgetRegistration unregisters a VMM whose registration failed, without
// recording anything (the database may be what failed); the saga's undo
// marks the VMM saga_unwound. It outlives a cancelled request, within a
// bound of its own.
func (d Deps) forgetRegistration(ctx context.Context, sled, vmm uuid.UUID) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sledclient.CallTimeout)
	defer cancel()
	if _, err := d.Sleds.EnsureUnregistered(ctx, sled, vmm); err != nil && d.Log != nil {
		d.Log.Warn("a failed registration could not be undone; the orphan reaper will", zap.Stringer("vmm_id", vmm),
			zap.Stringer("sled_id", sled), zap.Error(err))
	}
}

// unregister undoes a registration and records the sled's answer. A sled
// that does not know the VMM (it was force-terminated meanwhile, or the
// sled restarted) answers empty, which is success; a sled that cannot be
// reached fails the undo, which the engine retries and, failing that,
// reports the saga stuck.
func (d Deps) unregister(ctx context.Context, sled, vmm uuid.UUID) error {
	rt, err := d.Sleds.EnsureUnregistered(ctx, sled, vmm)
	if err != nil || rt == nil {
		return err
	}
	return d.record(ctx, vmm, *rt, nil)
}

// ensureState asks a VMM's sled for a target state and records the answer.
func (d Deps) ensureState(ctx context.Context, sled, vmm uuid.UUID, target model.VMMTarget) error {
	rt, err := d.Sleds.EnsureState(ctx, sled, vmm, target)
	return d.record(ctx, vmm, rt, err)
}
