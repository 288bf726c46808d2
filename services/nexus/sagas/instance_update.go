package sagas

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

// InstanceUpdateParams name the instance and the lock holder id this update
// takes the updater lock as.
type InstanceUpdateParams struct {
	Instance uuid.UUID `json:"instance"`
	Lock     uuid.UUID `json:"lock"`
}

// instanceUpdate (N6): take the updater lock (try-lock: if another update
// holds it, that one does the work), unlink a terminal active VMM and set
// the instance no_vmm, or failed when the VMM failed, through the
// generation guard, and release the lock. Migrations are resolved here too
// once they exist.
func instanceUpdate(d Deps) saga.Template {
	return saga.Template{Name: InstanceUpdate, Nodes: []saga.Node{
		{Name: "lock", Action: d.updaterLock, Undo: d.updaterUnlock},
		{Name: "apply", Action: d.applyUpdate},
		{Name: "unlock", Action: d.releaseAndRecheck},
	}}
}

// releaseAndRecheck releases the lock, then looks again: an update that
// found the lock held while this saga had it gave up, trusting the holder,
// so the holder must catch what changed meanwhile. If the instance still
// needs settling and the lock is free, take it again and settle; if someone
// else took it, they re-check when they release. Whoever releases last
// looks last, so no update is lost.
func (d Deps) releaseAndRecheck(ctx context.Context, sc *saga.Context) (any, error) {
	var p InstanceUpdateParams
	if err := sc.Params(&p); err != nil {
		return nil, err
	}
	for attempt := 0; attempt < casRetries; attempt++ {
		if err := d.DS.InstanceUpdaterUnlock(ctx, p.Instance, p.Lock); err != nil {
			return nil, err
		}
		inst, err := d.DS.InstanceGet(ctx, p.Instance)
		if err != nil {
			return nil, err
		}
		if _, needed, err := d.settle(ctx, inst); err != nil || !needed {
			return nil, err
		}
		locked, err := d.DS.InstanceUpdaterLock(ctx, p.Instance, p.Lock)
		if err != nil || !locked {
			return nil, err
		}
		if err := d.settleInstance(ctx, p.Instance); err != nil {
			return nil, err
		}
	}
	return nil, d.DS.InstanceUpdaterUnlock(ctx, p.Instance, p.Lock)
}

func (d Deps) updaterLock(ctx context.Context, sc *saga.Context) (any, error) {
	var p InstanceUpdateParams
	if err := sc.Params(&p); err != nil {
		return nil, err
	}
	locked, err := d.DS.InstanceUpdaterLock(ctx, p.Instance, p.Lock)
	if err != nil {
		return nil, err
	}
	if !locked {
		return nil, ErrUpdaterLockHeld
	}
	return nil, nil
}

func (d Deps) updaterUnlock(ctx context.Context, sc *saga.Context) error {
	var p InstanceUpdateParams
	if err := sc.Params(&p); err != nil {
		return err
	}
	return d.DS.InstanceUpdaterUnlock(ctx, p.Instance, p.Lock)
}

func (d Deps) applyUpdate(ctx context.Context, sc *saga.Context) (any, error) {
	var p InstanceUpdateParams
	if err := sc.Params(&p); err != nil {
		return nil, err
	}
	return nil, d.settleInstance(ctx, p.Instance)
}

// settleInstance writes the runtime the instance's VMMs call for, through
// the generation guard, re-reading when it loses a race.
func (d Deps) settleInstance(ctx context.Context, id uuid.UUID) error {
	for attempt := 0; attempt < casRetries; attempt++ {
		inst, err := d.DS.InstanceGet(ctx, id)
		if err != nil {
			return err
		}
		next, changed, err := d.settle(ctx, inst)
		if err != nil || !changed {
			return err
		}
		wrote, err := d.DS.InstanceUpdateRuntime(ctx, inst.ID, next)
		if err != nil || wrote {
			return err
		}
	}
	return fmt.Errorf("instance %s kept changing during its update", id)
}

// settle computes the instance runtime its VMMs call for: an active VMM
// that is destroyed, failed or saga_unwound is unlinked.
func (d Deps) settle(ctx context.Context, inst datastore.Instance) (datastore.InstanceRuntime, bool, error) {
	rt := inst.Runtime
	if rt.ActiveVMM == nil {
		return rt, false, nil
	}
	vmm, err := d.DS.VMMGet(ctx, *rt.ActiveVMM)
	if err != nil {
		return rt, false, err
	}
	if !vmm.Runtime.State.Terminal() {
		return rt, false, nil
	}
	next := datastore.InstanceRuntime{State: datastore.InstanceNoVMM, Generation: rt.Generation + 1, TimeUpdated: time.Now()}
	if vmm.Runtime.State == datastore.VMMFailed {
		next.State = datastore.InstanceFailed
	}
	return next, true, nil
}
