package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/sagas"
)

// WatchInstances asks each sled about every VMM the database says it runs
// (N8 instance watcher). NO_SUCH_VMM marks the VMM failed, only if its
// generation is still the one read; a sled that cannot be reached proves
// nothing and changes nothing; an answer is recorded through the guard, in
// case a publication was lost.
func (n *Nexus) WatchInstances(ctx context.Context) error {
	vmms, err := n.ds.VMMListActive(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range vmms {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rt, err := n.sleds.VMMState(callCtx, v.SledID, v.ID)
		cancel()
		switch {
		case errors.Is(err, model.ErrVMMGone):
			if v.Runtime.State == model.VMMCreating {
				continue // a start saga has not registered it yet
			}
			if err := n.markForgotten(ctx, v, "instance watcher: sled no longer knows the VMM; marked it failed"); err != nil {
				errs = append(errs, err)
			}
		case errors.Is(err, model.ErrSledUnreachable):
			n.log.Info("instance watcher: sled unreachable; inconclusive", zap.Stringer("sled_id", v.SledID))
		case err != nil:
			errs = append(errs, err)
		default:
			// In case a publication was lost.
			if err := n.recordAnswer(ctx, v, rt); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// UpdateStaleInstances runs an update saga for every instance whose active
// VMM is terminal: the backstop for updates that never ran (N8 updater).
func (n *Nexus) UpdateStaleInstances(ctx context.Context) error {
	ids, err := n.ds.InstancesNeedingUpdate(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		_, err := n.sagas.Run(ctx, sagas.InstanceUpdate, sagas.InstanceUpdateParams{Instance: id})
		if err != nil && !errors.Is(err, model.ErrUpdaterLockHeld) {
			errs = append(errs, fmt.Errorf("instance %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// Reincarnate restarts failed instances their users want running, whose
// policy allows it, at most once per cooldown (N8 reincarnation).
func (n *Nexus) Reincarnate(ctx context.Context, cooldown time.Duration) error {
	now := time.Now()
	ids, err := n.ds.InstancesToReincarnate(ctx, now.Add(-cooldown))
	if err != nil {
		return err
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
	return errors.Join(errs...)
}

// CheckSledLiveness reports sleds that stopped heartbeating; they receive
// no new VMMs (the start saga only places VMMs on sleds seen recently), and
// their VMMs are left to the instance watcher, which never calls a VMM dead
// for want of an answer.
func (n *Nexus) CheckSledLiveness(ctx context.Context, liveness time.Duration) error {
	sleds, err := n.ds.SledList(ctx)
	if err != nil {
		return err
	}
	for _, s := range sleds {
		if since := time.Since(s.TimeLastSeen); since > liveness {
			n.log.Warn("sled has not heartbeated", zap.Stringer("sled_id", s.ID), zap.Duration("since", since))
		}
	}
	return nil
}
