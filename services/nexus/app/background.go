package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/sagas"
)

// WatchInstances asks each sled about every VMM the database says it runs
// (N8 instance watcher). NO_SUCH_VMM marks the VMM failed, only if its
// generation is still the one read; a sled that cannot be reached proves
// nothing and changes nothing; an answer is recorded through the guard, in
// case a publication was lost.
//
// Sleds are asked in parallel, and each sled's VMMs a few at a time: a
// sled that does not answer costs the pass one call timeout, not one per
// VMM, and never holds up the other sleds. Once one of its calls finds a
// sled unreachable, its VMMs not yet asked are left for the next pass.
func (n *Nexus) WatchInstances(ctx context.Context) (vmmsAsked int, err error) {
	vmms, err := n.ds.VMMListActive(ctx)
	if err != nil {
		return 0, err
	}
	bySled := map[uuid.UUID][]model.VMM{}
	for _, v := range vmms {
		bySled[v.SledID] = append(bySled[v.SledID], v)
	}
	groups := make([][]model.VMM, 0, len(bySled))
	for _, onSled := range bySled {
		groups = append(groups, onSled)
	}
	var (
		mu   sync.Mutex
		errs []error
	)
	failed := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	err = eachSled(ctx, groups, func(onSled []model.VMM) error {
		n.watchSled(ctx, onSled[0].SledID, onSled, failed)
		return nil
	})
	return len(vmms), errors.Join(append(errs, err)...)
}

const (
	// watchVMMsPerSled bounds how many calls the instance watcher makes
	// to one sled at once: a sled is not flooded, and a dead one holds at
	// most that many calls until they time out.
	watchVMMsPerSled = 4
	// watchCallTimeout bounds one question to a sled.
	watchCallTimeout = 5 * time.Second
)

// watchSled asks one sled about its VMMs: all at once, through its
// inventory, which lists every VMM it has registered and not seen end, with
// its runtime; then, one by one (watchVMMsPerSled at a time), those the
// inventory does not list: they ended, or the sled forgot them, and only
// the sled's answer about each (a terminal runtime, or NO_SUCH_VMM) says
// which. One call a sled, not one a VMM, keeps a pass over 10,000 VMMs on
// 1,000 sleds to a few seconds (SPEC 6). It stops at the first call that
// finds the sled unreachable.
func (n *Nexus) watchSled(ctx context.Context, sled uuid.UUID, vmms []model.VMM, failed func(error)) {
	callCtx, cancel := context.WithTimeout(ctx, watchCallTimeout)
	inv, err := n.sleds.Inventory(callCtx, sled)
	cancel()
	switch {
	case errors.Is(err, model.ErrSledUnreachable):
		n.log.Info("instance watcher: sled unreachable; inconclusive for its VMMs", zap.Stringer("sled_id", sled),
			zap.Int("vmms", len(vmms)))
		return
	case err != nil:
		failed(fmt.Errorf("inventory of sled %s: %w", sled, err))
		return
	}
	listed := make(map[uuid.UUID]model.InventoryVMM, len(inv.VMMs))
	for _, v := range inv.VMMs {
		listed[v.ID] = v
	}
	var unlisted []model.VMM
	for _, v := range vmms {
		answer, ok := listed[v.ID]
		switch {
		case !ok:
			unlisted = append(unlisted, v)
		case answer.Generation > v.Runtime.Generation:
			// A publication was lost. (An answer the database already
			// has is not written again: the guard would refuse it.)
			if err := n.recordAnswer(ctx, v, answer.Runtime()); err != nil {
				failed(err)
			}
		}
	}
	n.watchVMMs(ctx, sled, unlisted, failed)
}

// watchVMMs asks one sled about each of vmms, watchVMMsPerSled at a time,
// until it answers none (unreachable).
func (n *Nexus) watchVMMs(ctx context.Context, sled uuid.UUID, vmms []model.VMM, failed func(error)) {
	var (
		unreachable atomic.Bool
		wg          sync.WaitGroup
	)
	calls := make(chan struct{}, watchVMMsPerSled)
	for _, v := range vmms {
		calls <- struct{}{}
		if unreachable.Load() || ctx.Err() != nil {
			<-calls
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-calls }()
			if n.watchVMM(ctx, v, failed) {
				unreachable.Store(true)
			}
		}()
	}
	wg.Wait()
	if unreachable.Load() {
		n.log.Info("instance watcher: sled unreachable; inconclusive for its VMMs", zap.Stringer("sled_id", sled),
			zap.Int("vmms", len(vmms)))
	}
}

// watchVMM asks the VMM's sled about it and acts on the answer; true when
// the sled could not be reached.
func (n *Nexus) watchVMM(ctx context.Context, v model.VMM, failed func(error)) (unreachable bool) {
	callCtx, cancel := context.WithTimeout(ctx, watchCallTimeout)
	rt, err := n.sleds.VMMState(callCtx, v.SledID, v.ID)
	cancel()
	switch {
	case errors.Is(err, model.ErrVMMGone):
		if v.Runtime.State == model.VMMCreating {
			return false // a start saga has not registered it yet
		}
		if err := n.markForgotten(ctx, v, "instance watcher: sled no longer knows the VMM; marked it failed"); err != nil {
			failed(err)
		}
	case errors.Is(err, model.ErrSledUnreachable):
		return true
	case err != nil:
		failed(err)
	case rt.Generation > v.Runtime.Generation:
		// A publication was lost. (An answer the database already has is
		// not written again: the guard would refuse it, and a pass over
		// 10,000 VMMs would cost as many statements.)
		if err := n.recordAnswer(ctx, v, rt); err != nil {
			failed(err)
		}
	}
	return false
}

// CarryOutStopWishes asks the sled of every instance its user wants
// stopped, and whose VMM still runs, to stop it (N13): a stop or a
// force-terminate that could not reach the sled recorded the wish and
// answered 503, and nobody repeated it. The sled's answer goes through the
// guard, and its publications settle the instance as for any stop. A sled
// that does not answer is not asked again in the same pass.
//
// It stops, it does not terminate: the wish does not say whether a stop or
// a force-terminate wrote it, and a stop is the gentler of the two; a VMM
// wedged in its stop still needs the operator's force-terminate.
func (n *Nexus) CarryOutStopWishes(ctx context.Context) (instances int, err error) {
	ids, err := n.ds.InstancesToStop(ctx)
	if err != nil {
		return 0, err
	}
	unreachable := map[uuid.UUID]bool{}
	var errs []error
	for _, id := range ids {
		inst, err := n.ds.InstanceGet(ctx, id)
		if errors.Is(err, model.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Looked at again: a start or a migration since the list wins.
		if inst.IntendedState != model.IntendStopped || inst.Runtime.State != model.InstanceVMM ||
			inst.Runtime.MigrationID != nil || inst.Runtime.ActiveVMM == nil {
			continue
		}
		vmm, err := n.ds.VMMGet(ctx, *inst.Runtime.ActiveVMM)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if unreachable[vmm.SledID] {
			continue
		}
		callCtx, cancel := context.WithTimeout(ctx, watchCallTimeout)
		err = n.tellActiveVMM(callCtx, inst, model.TargetStopped)
		cancel()
		switch {
		case errors.Is(err, model.ErrSledUnreachable):
			unreachable[vmm.SledID] = true
		case err != nil && !errors.Is(err, model.ErrVMMGone):
			errs = append(errs, fmt.Errorf("instance %s: %w", id, err))
		case err == nil:
			n.log.Info("carried out a stop wish the sled had not heard", zap.Stringer("instance_id", id),
				zap.Stringer("vmm_id", vmm.ID), zap.Stringer("sled_id", vmm.SledID))
		}
	}
	return len(ids), errors.Join(errs...)
}

// UpdateStaleInstances runs an update saga for every instance whose active
// VMM is terminal: the backstop for updates that never ran (N8 updater).
func (n *Nexus) UpdateStaleInstances(ctx context.Context) (instances int, err error) {
	ids, err := n.ds.InstancesNeedingUpdate(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, id := range ids {
		_, err := n.sagas.Run(ctx, sagas.InstanceUpdate, sagas.InstanceUpdateParams{Instance: id})
		if err != nil && !errors.Is(err, model.ErrUpdaterLockHeld) {
			errs = append(errs, fmt.Errorf("instance %s: %w", id, err))
		}
	}
	return len(ids), errors.Join(errs...)
}

// Reincarnate restarts failed instances their users want running, whose
// policy allows it, at most once per cooldown (N8 reincarnation).
func (n *Nexus) Reincarnate(ctx context.Context, cooldown time.Duration) (instances int, err error) {
	now := time.Now()
	ids, err := n.ds.InstancesToReincarnate(ctx, now.Add(-cooldown))
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, id := range ids {
		claimed, err := n.ds.InstanceClaimAutoRestart(ctx, id, now, now.Add(-cooldown), n.replica.id)
		if err != nil || !claimed {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		n.log.Info("reincarnating a failed instance", zap.Stringer("instance_id", id))
		if _, err := n.runStart(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("reincarnating instance %s: %w", id, err))
		}
	}
	return len(ids), errors.Join(errs...)
}

// CheckSledLiveness logs each sled that became unreachable (no heartbeat
// for the heartbeat timeout) or reachable again since its last pass.
// Nothing waits for it: a sled's reachability is worked out from its last
// heartbeat wherever it is read (the sled API, an instance's view,
// placement, which never puts a VMM on an unreachable sled), so it shows
// within the timeout and comes back with the first heartbeat. Its VMMs are
// left to the instance watcher, which never calls a VMM dead for want of
// an answer (F7).
func (n *Nexus) CheckSledLiveness(ctx context.Context) (sledsChecked int, err error) {
	sleds, err := n.ds.SledList(ctx)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	for _, s := range sleds {
		unreachable := s.Reachability(now, n.sledHeartbeatTimeout) == model.SledUnreachable
		if unreachable == n.sledsUnreachable[s.ID] {
			continue
		}
		if unreachable {
			n.log.Warn("sled unreachable: no heartbeat; it gets no new VMM, and its VMMs keep their states until it answers",
				zap.Stringer("sled_id", s.ID), zap.Time("last_seen", s.TimeLastSeen), zap.Duration("timeout", n.sledHeartbeatTimeout))
			n.sledsUnreachable[s.ID] = true
		} else {
			n.log.Info("sled reachable again", zap.Stringer("sled_id", s.ID), zap.Time("last_seen", s.TimeLastSeen))
			delete(n.sledsUnreachable, s.ID)
		}
	}
	return len(sleds), nil
}
