package sagas

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sledclient"
)

// InstanceUpdateParams name the instance and the lock holder id this update
// takes the updater lock as.
type InstanceUpdateParams struct {
	Instance uuid.UUID `json:"instance"`
	Lock     uuid.UUID `json:"lock"`
}

// instanceUpdate (N6): take the updater lock (try-lock: if another update
// holds it, that one does the work), resolve a finished migration and unlink
// a terminal active VMM as Settle says, through the generation guard, and
// release the lock.
func instanceUpdate(d Deps) saga.Template {
	return saga.Template{Name: InstanceUpdate, Nodes: []saga.Node{
		{Name: "lock", Action: d.updaterLock, Undo: d.updaterUnlock},
		{Name: "apply", Action: d.applyUpdate},
		{Name: "unlock", Action: d.releaseAndRecheck},
		{Name: "honour_stop_wish", Action: d.honourStopWish},
	}}
}

// honourStopWish stops the VMM an instance is left running on when its
// user asked it to stop meanwhile. A stop that arrives during a migration
// is sent to neither side (a migrating VMM cannot be stopped, and the guest
// may be about to move): the update that resolves the migration carries it
// out, on whichever VMM the guest ended up on. A VMM still starting is left
// to its start saga, which looks at the wish itself.
func (d Deps) honourStopWish(ctx context.Context, sc *saga.Context) (any, error) {
	var p InstanceUpdateParams
	if err := sc.Params(&p); err != nil {
		return nil, err
	}
	snap, err := d.DS.InstanceSnapshot(ctx, p.Instance)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rt := snap.Instance.Runtime
	if snap.Instance.IntendedState != datastore.IntendStopped || rt.State != datastore.InstanceVMM ||
		rt.MigrationID != nil || snap.Active == nil || snap.Active.Runtime.State != datastore.VMMRunning {
		return nil, nil
	}
	client, err := d.Sleds.Client(ctx, snap.Active.SledID)
	if err != nil {
		return nil, err
	}
	// The answer is not written: the VMM may have ended already (this look
	// can be older than its end), and an end written here would keep its
	// publication from starting the update that unlinks it. The sled
	// publishes every step of the stop.
	_, err = client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: snap.Active.ID.String(),
		Target: sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED})
	return nil, sledclient.Classify(snap.Active.SledID, err)
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
		snap, err := d.DS.InstanceSnapshot(ctx, p.Instance)
		if err != nil || !NeedsSettling(snap) {
			return nil, err
		}
		locked, err := d.DS.InstanceUpdaterLock(ctx, p.Instance, p.Lock)
		if err != nil || !locked {
			return nil, err
		}
		if err := d.settleInstance(ctx, p.Instance, p.Lock); err != nil {
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
	return nil, d.settleInstance(ctx, p.Instance, p.Lock)
}

// settleInstance writes the runtime the instance's VMMs call for, through
// the generation guard, as the holder of its updater lock.
func (d Deps) settleInstance(ctx context.Context, id, holder uuid.UUID) error {
	_, err := d.DS.InstanceSettle(ctx, id, holder, nil, func(s datastore.InstanceSnapshot) (datastore.InstanceRuntime, bool) {
		return Settle(s, time.Now())
	})
	return err
}
