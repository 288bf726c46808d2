package sagas

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

// InstanceUpdateParams name the instance to update. The saga takes the
// updater lock as itself (its id), so that the lock's holder names the
// saga, and through it the replica that runs it (X6).
type InstanceUpdateParams struct {
	Instance uuid.UUID `json:"instance"`
	// Lock is the holder id sagas created before the saga's own id was
	// the holder took the lock as; empty for every new one.
	Lock uuid.UUID `json:"lock,omitempty"`
}

// lockHolder is the id this update holds the updater lock as.
func lockHolder(sc *saga.Context, p InstanceUpdateParams) uuid.UUID {
	if p.Lock != uuid.Nil {
		return p.Lock
	}
	return sc.SagaID()
}

// instanceUpdate (N6): take the updater lock (try-lock: if another update
// holds it, that one does the work), resolve a finished migration and unlink
// a terminal active VMM as model.Settle says, through the generation guard,
// and release the lock.
//
// Who holds what: the lock is the saga's for as long as its nodes run
// between "lock" and "unlock"; a force-terminate settles without the lock
// only when it is free (datastore.InstanceSettle refuses otherwise), so at
// most one writer decides from a snapshot at a time. Whoever releases the
// lock looks once more (releaseAndRecheck), so an update that found the
// lock held and gave up is never lost.
func instanceUpdate(d Deps) saga.Template {
	return saga.Template{Name: InstanceUpdate, Nodes: []saga.Node{
		{Name: "lock", Action: saga.ActionWith(d.updaterLock), Undo: saga.UndoWith(d.updaterUnlock)},
		{Name: "apply", Action: saga.ActionWith(d.applyUpdate)},
		{Name: "unlock", Action: saga.ActionWith(d.releaseAndRecheck)},
		{Name: "honour_stop_wish", Action: saga.ActionWith(d.honourStopWish)},
	}}
}

// honourStopWish stops the VMM an instance is left running on when its
// user asked it to stop meanwhile. A stop that arrives during a migration
// is sent to neither side (a migrating VMM cannot be stopped, and the guest
// may be about to move): the update that resolves the migration carries it
// out, on whichever VMM the guest ended up on. A VMM still starting is left
// to its start saga, which looks at the wish itself.
func (d Deps) honourStopWish(ctx context.Context, _ *saga.Context, p InstanceUpdateParams) (any, error) {
	snap, err := d.DS.InstanceSnapshot(ctx, p.Instance)
	if errors.Is(err, model.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rt := snap.Instance.Runtime
	if snap.Instance.IntendedState != model.IntendStopped || rt.State != model.InstanceVMM ||
		rt.MigrationID != nil || snap.Active == nil || snap.Active.Runtime.State != model.VMMRunning {
		return nil, nil
	}
	// The answer is not written: the VMM may have ended already (this look
	// can be older than its end), and an end written here would keep its
	// publication from starting the update that unlinks it. The sled
	// publishes every step of the stop.
	_, err = d.Sleds.EnsureState(ctx, snap.Active.SledID, snap.Active.ID, model.TargetStopped)
	return nil, err
}

// releaseAndRecheck releases the lock, then looks again: an update that
// found the lock held while this saga had it gave up, trusting the holder,
// so the holder must catch what changed meanwhile. If the instance still
// needs settling and the lock is free, take it again and settle; if someone
// else took it, they re-check when they release. Whoever releases last
// looks last, so no update is lost.
func (d Deps) releaseAndRecheck(ctx context.Context, sc *saga.Context, p InstanceUpdateParams) (any, error) {
	holder := lockHolder(sc, p)
	for range recheckRounds {
		if err := d.DS.InstanceUpdaterUnlock(ctx, p.Instance, holder); err != nil {
			return nil, err
		}
		snap, err := d.DS.InstanceSnapshot(ctx, p.Instance)
		if err != nil || !model.NeedsSettling(snap) {
			return nil, err
		}
		locked, err := d.DS.InstanceUpdaterLock(ctx, p.Instance, holder, d.Replica)
		if errors.Is(err, model.ErrReplicaNotActive) {
			// Expunged meanwhile: the lock is released, and what is left
			// to settle is an active replica's (the background updater).
			return nil, nil
		}
		if err != nil || !locked {
			return nil, err
		}
		if err := d.settleInstance(ctx, p.Instance, holder); err != nil {
			return nil, err
		}
	}
	return nil, d.DS.InstanceUpdaterUnlock(ctx, p.Instance, holder)
}

// recheckRounds bounds how often one update settles again what changed
// while it held the lock; the background updater catches anything later.
const recheckRounds = 8

func (d Deps) updaterLock(ctx context.Context, sc *saga.Context, p InstanceUpdateParams) (any, error) {
	locked, err := d.DS.InstanceUpdaterLock(ctx, p.Instance, lockHolder(sc, p), d.Replica)
	if err != nil {
		return nil, err
	}
	if !locked {
		return nil, model.ErrUpdaterLockHeld
	}
	return nil, nil
}

func (d Deps) updaterUnlock(ctx context.Context, sc *saga.Context, p InstanceUpdateParams) error {
	return d.DS.InstanceUpdaterUnlock(ctx, p.Instance, lockHolder(sc, p))
}

func (d Deps) applyUpdate(ctx context.Context, sc *saga.Context, p InstanceUpdateParams) (any, error) {
	return nil, d.settleInstance(ctx, p.Instance, lockHolder(sc, p))
}

// settleInstance writes the runtime the instance's VMMs call for, through
// the generation guard, as the holder of its updater lock.
func (d Deps) settleInstance(ctx context.Context, id, holder uuid.UUID) error {
	_, err := d.DS.InstanceSettle(ctx, id, holder, nil, model.SettleNow)
	return err
}
