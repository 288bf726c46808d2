package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/pkg/logging"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
)

const (
	// defaultSledRetryBound is how long force-terminate keeps trying a sled
	// that does not answer (F7).
	defaultSledRetryBound = 10 * time.Second
	// sledAttemptTimeout bounds one EnsureUnregistered: a black-holed sled
	// must turn into a retry, not a hang.
	sledAttemptTimeout = 2 * time.Second
	// defaultLockWaitBound is how long force-terminate waits for another
	// update holding the instance's updater lock (F6).
	defaultLockWaitBound = 10 * time.Second
	// terminateRounds bounds how often a VMM that moved on while it was
	// being terminated is looked at again (F5).
	terminateRounds = 4
)

var (
	sledRetryPolicy = backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second, Jitter: 0.2}
	lockWaitPolicy  = backoff.Policy{Initial: 5 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: 0.2}
)

// Outcomes of terminating one VMM, as logged and counted (F12).
const (
	vmmDestroyed    = "destroyed"    // its sled-agent terminated it
	vmmMarkedFailed = "failed"       // its sled-agent had forgotten it (F5)
	vmmUnwound      = "saga_unwound" // never registered: its start or migration had not got that far
	vmmMovedOn      = "moved_on"     // someone else ended it first; nothing was marked
)

// termination is what force-terminate did to one VMM.
type termination struct {
	vmm   model.VMM
	write model.VMMWrite
	// marked: the write records that the sled did not know the VMM, so it
	// is only right while the VMM's generation is the one read (F5).
	marked  bool
	outcome string
}

// InstanceForceTerminate terminates every VMM of the instance and returns
// it settled (SPEC F1-F12): stopped, or failed when a sled-agent had
// forgotten its VMM.
func (n *Nexus) InstanceForceTerminate(ctx context.Context, instance, project string) (InstanceView, error) {
	lookup := func() (uuid.UUID, error) {
		inst, err := n.lookupInstance(ctx, instance, project, authz.RoleCollaborator, "force-terminate")
		return inst.ID, err
	}
	var id uuid.UUID
	if isUUID(instance) && project == "" {
		// The wish checks the caller's role itself (see forceTerminate):
		// no lookup is needed unless it finds nothing to write.
		id = uuid.MustParse(instance)
	} else {
		var err error
		if id, err = lookup(); err != nil {
			return InstanceView{}, err
		}
	}
	start := time.Now()
	view, done, err := n.forceTerminate(ctx, id, lookup)
	outcome := "ok"
	switch {
	case errors.Is(err, model.ErrSledUnreachable):
		outcome = "sled_unreachable"
	case errors.Is(err, model.ErrUpdateInProgress):
		outcome = "update_in_progress"
	case err != nil:
		outcome = "error"
	}
	n.forceTerminateCounts(outcome)
	vmms := make([]string, 0, len(done))
	for _, t := range done {
		vmms = append(vmms, t.vmm.ID.String()+"@"+t.vmm.SledID.String()+": "+t.outcome)
	}
	fields := []zap.Field{zap.String("caller", authz.FromContext(ctx).Principal), zap.Stringer("instance_id", id),
		zap.Strings("vmms", vmms), zap.String("outcome", outcome), zap.Duration("elapsed", time.Since(start))}
	log := logging.FromContext(ctx, n.log)
	if err != nil {
		log.Warn("force-terminate failed", append(fields, zap.Error(err))...)
		return InstanceView{}, err
	}
	log.Info("force-terminated instance", append(fields, zap.String("run_state", view.RunState))...)
	return view, nil
}

// forceTerminate ends the instance's VMMs and settles it. lookup finds the
// instance as the caller named it, checking the caller's role: it is only
// called to say why the wish found nothing to write.
func (n *Nexus) forceTerminate(ctx context.Context, id uuid.UUID, lookup func() (uuid.UUID, error)) (InstanceView, []termination, error) {
	// F2: the wish comes first, so that nothing restarts the instance
	// whatever happens next. It is written only where the caller is at
	// least a collaborator, checked in the same statement.
	all, projects := authz.ProjectsWithRole(ctx, authz.RoleCollaborator)
	scope := datastore.ProjectScope{All: all, Projects: projects}
	snap, err := n.ds.InstanceIntendStopped(ctx, id, scope, time.Now())
	if errors.Is(err, model.ErrNotFound) {
		// Missing, or not the caller's to stop: the lookup, with the same
		// caller, says which (404 or 403).
		if _, lookupErr := lookup(); lookupErr != nil {
			return InstanceView{}, nil, lookupErr
		}
	}
	if err != nil {
		return InstanceView{}, nil, err
	}
	var done []termination
	pending := snap.LiveVMMs()
	if len(pending) == 0 && snap.Instance.Runtime.State == model.InstanceCreating {
		// F1: `creating` is not settled. Its create saga sees the wish
		// before it links a VMM (and creates it stopped) or, once one is
		// linked, after it, and stops it.
		return InstanceView{}, nil, fmt.Errorf("%w: it is being created; the stop is recorded and its create will "+
			"not leave it running; force-terminate again to see it settled", model.ErrInstanceBusy)
	}
	if len(pending) == 0 && !model.NeedsSettling(snap) {
		// F8: nothing runs; no sled is called and nothing is written.
		return viewOf(snap), nil, nil
	}
	for round := 0; ; round++ {
		if round == terminateRounds {
			return InstanceView{}, done, fmt.Errorf("%w: its VMMs kept changing while they were terminated", model.ErrInstanceBusy)
		}
		var results []termination
		var err error
		if len(pending) > 0 {
			if results, err = n.terminateAll(ctx, pending); len(results) == 0 {
				// F7: no sled answered; nothing but the wish has changed.
				return InstanceView{}, done, err
			}
		}
		writes := make([]model.VMMWrite, len(results))
		for i, t := range results {
			writes[i] = t.write
		}
		// F4, F6: what the sleds said goes through the VMM guard, and the
		// instance settles, in one commit.
		res, settleErr := n.ds.InstanceSettleFrom(ctx, snap, writes, model.SettleNow)
		if settleErr != nil {
			return InstanceView{}, done, settleErr
		}
		snap = res.After
		pending = nil
		for i, t := range results {
			if t.marked && !res.VMMWritten[i] {
				// F5: it moved on since it was read (a racing stop
				// destroyed it, or a start registered it): nothing was
				// marked. Look again: if it is still alive, end it.
				v, err := n.ds.VMMGet(ctx, t.vmm.ID)
				if err != nil {
					return InstanceView{}, done, err
				}
				if !v.Runtime.State.Terminal() {
					pending = append(pending, v)
				}
				t.outcome = vmmMovedOn
			}
			done = append(done, t)
		}
		if err != nil {
			// F7: a sled that did not answer; the others' answers are
			// recorded, and nothing is claimed about its VMM.
			return InstanceView{}, done, err
		}
		if res.Outcome == datastore.SettleLockHeld {
			if snap, err = n.settleWhenUnlocked(ctx, id); err != nil {
				return InstanceView{}, done, err
			}
		}
		switch {
		case snap.Instance.IntendedState == model.IntendStopped:
			// A VMM linked since the first look (a racing migration's
			// target, a start that lost to this call's wish) is ended too,
			// so the answer is settled (F1).
			pending = appendNew(pending, snap.LiveVMMs())
		case snap.Target != nil && !snap.Target.Runtime.State.Terminal():
			// A start that came later recorded its own wish and wins; a
			// migration racing this call does not: its target is ended,
			// so the answer is never migrating (F1).
			pending = appendNew(pending, []model.VMM{*snap.Target})
		}
		if len(pending) == 0 {
			return viewOf(snap), done, nil
		}
	}
}

// appendNew appends the VMMs of more not already in vmms.
func appendNew(vmms, more []model.VMM) []model.VMM {
	for _, m := range more {
		if !slices.ContainsFunc(vmms, func(v model.VMM) bool { return v.ID == m.ID }) {
			vmms = append(vmms, m)
		}
	}
	return vmms
}

// terminateAll unregisters the VMMs from their sleds at the same time, so
// that two unreachable sleds cost one bound, not two. It returns the
// terminations that got an answer, and the error of any that did not.
func (n *Nexus) terminateAll(ctx context.Context, vmms []model.VMM) ([]termination, error) {
	if len(vmms) == 1 {
		t, err := n.terminate(ctx, vmms[0])
		if err != nil {
			return nil, err
		}
		return []termination{t}, nil
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		out  []termination
		errs []error
	)
	for _, v := range vmms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t, err := n.terminate(ctx, v)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			out = append(out, t)
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// terminate asks the VMM's sled-agent to unregister it (F4), retrying a
// sled that does not answer until the bound (F7).
func (n *Nexus) terminate(ctx context.Context, v model.VMM) (termination, error) {
	rt, err := n.unregister(ctx, v)
	if err != nil {
		return termination{}, err
	}
	if rt != nil {
		return termination{vmm: v, write: model.VMMWrite{ID: v.ID, Runtime: *rt}, outcome: vmmDestroyed}, nil
	}
	// The sled does not know the VMM: its end is only written if nobody
	// advanced the VMM meanwhile (F5).
	end := model.EndUnknownToSled(v, time.Now())
	outcome := vmmMarkedFailed
	if end.State == model.VMMSagaUnwound {
		// Never registered: the saga creating it had not reached its sled.
		// Nothing failed; that saga finds its VMM ended and unwinds.
		outcome = vmmUnwound
	}
	return termination{vmm: v, write: model.VMMWrite{ID: v.ID, Runtime: end}, marked: true, outcome: outcome}, nil
}

// unregister is EnsureUnregistered, each try bounded and a sled that does
// not answer tried again until sledRetryBound.
func (n *Nexus) unregister(ctx context.Context, v model.VMM) (*model.VMMRuntime, error) {
	deadline := time.Now().Add(n.sledRetryBound)
	for attempt := 0; ; attempt++ {
		callCtx, cancel := context.WithDeadline(ctx, minTime(deadline, time.Now().Add(sledAttemptTimeout)))
		rt, err := n.sleds.EnsureUnregistered(callCtx, v.SledID, v.ID)
		cancel()
		if !errors.Is(err, model.ErrSledUnreachable) || ctx.Err() != nil {
			return rt, err
		}
		wait := sledRetryPolicy.Delay(attempt)
		if time.Now().Add(wait).After(deadline) {
			// A call the sled has queued may still run when it answers
			// again, so nothing here can say the VMM is still running.
			return nil, fmt.Errorf("%w: gave up after %s; VMM %s on sled %s may or may not have been terminated "+
				"(a call the sled has not answered can still run); force-terminate again once the sled answers: %v",
				model.ErrSledUnreachable, n.sledRetryBound, v.ID, v.SledID, err)
		}
		if backoff.Sleep(ctx, wait) != nil {
			return nil, ctx.Err()
		}
	}
}

// settleWhenUnlocked waits, within a bound, for the update holding the
// instance's updater lock, then settles the instance itself if the holder
// left anything to do.
func (n *Nexus) settleWhenUnlocked(ctx context.Context, id uuid.UUID) (model.InstanceSnapshot, error) {
	n.events(EventForceTerminateLockWait, 1)
	deadline := time.Now().Add(n.lockWaitBound)
	for attempt := 0; ; attempt++ {
		if backoff.Sleep(ctx, lockWaitPolicy.Delay(attempt)) != nil {
			return model.InstanceSnapshot{}, ctx.Err()
		}
		res, err := n.ds.InstanceSettle(ctx, id, uuid.Nil, nil, model.SettleNow)
		if err != nil || res.Outcome != datastore.SettleLockHeld {
			return res.After, err
		}
		if time.Now().After(deadline) {
			return model.InstanceSnapshot{}, n.heldBy(ctx, id)
		}
	}
}

// heldBy is the error for an instance whose updater lock outlasted the
// wait: it names the saga and replica holding it and, since a replica that
// died holds it until its sagas move, says what frees it (X6).
func (n *Nexus) heldBy(ctx context.Context, id uuid.UUID) error {
	lock, err := n.ds.UpdaterLockGet(ctx, id)
	switch {
	case errors.Is(err, model.ErrNotFound):
		return fmt.Errorf("%w: its VMMs are terminated; the update that held it has just ended, force-terminate again to settle it",
			model.ErrUpdateInProgress)
	case err != nil:
		return fmt.Errorf("%w: its VMMs are terminated; who holds its updater lock could not be read: %v",
			model.ErrUpdateInProgress, err)
	case lock.Saga == uuid.Nil:
		return fmt.Errorf("%w: its VMMs are terminated; its updater lock is held by no saga this nexus knows",
			model.ErrUpdateInProgress)
	}
	state := lock.OwnerState
	if state == "" {
		state = "unknown"
	}
	expunge := "POST /v1/system/hardware/sleds/{sled_id}/zones/" + lock.Owner.String() + "/expunge"
	if lock.OwnerSled != uuid.Nil {
		expunge = "POST /v1/system/hardware/sleds/" + lock.OwnerSled.String() + "/zones/" + lock.Owner.String() + "/expunge"
	}
	holder := fmt.Sprintf("its VMMs are terminated; its updater lock is held by %s saga %s of nexus replica %s (%s)",
		lock.SagaTemplate, lock.Saga, lock.Owner, state)
	if state == model.NexusExpunged {
		return fmt.Errorf("%w: %s: its sagas move to an active replica, which settles the instance, once its zone is "+
			"confirmed gone (GET /v1/system/nexus-replicas shows what that waits for)", model.ErrUpdateInProgress, holder)
	}
	return fmt.Errorf("%w: %s; that saga settles the instance when it ends. If that replica is dead or wedged, "+
		"expunging its zone is the way out (%s): once the zone is confirmed gone its sagas move to an active replica",
		model.ErrUpdateInProgress, holder, expunge)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
