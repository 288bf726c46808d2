package sagas

import (
	"time"

	"github.com/rackplane/rackplane/services/nexus/datastore"
)

// Settle computes the runtime an instance's VMMs and migration call for
// (N6); changed is false when the instance already is what they call for.
// It is the one place these rules live: the update saga, force-terminate
// and the background updater all settle through it.
//
//   - A migration that either side saw complete makes the target the
//     active VMM.
//   - A migration whose target is terminal ended without moving the guest:
//     the source stays active. (A source that failed or vanished mid-pull
//     fails its target, so waiting for the target decides every case.)
//   - With no migration left, a terminal active VMM is unlinked: the
//     instance is failed when that VMM failed, no_vmm otherwise.
func Settle(s datastore.InstanceSnapshot, now time.Time) (datastore.InstanceRuntime, bool) {
	rt := s.Instance.Runtime
	if rt.State != datastore.InstanceVMM {
		return rt, false
	}
	next, changed, active := rt, false, s.Active
	if rt.MigrationID != nil {
		switch {
		case s.Migration != nil && s.Migration.Succeeded():
			next.ActiveVMM, next.TargetVMM, next.MigrationID = rt.TargetVMM, nil, nil
			active, changed = s.Target, true
		case s.Target == nil || s.Target.Runtime.State.Terminal():
			next.TargetVMM, next.MigrationID = nil, nil
			changed = true
		default:
			// Still migrating; a later update of either side decides.
		}
	}
	if next.MigrationID == nil && (active == nil || active.Runtime.State.Terminal()) {
		next.State, next.ActiveVMM, next.TargetVMM = datastore.InstanceNoVMM, nil, nil
		if active != nil && active.Runtime.State == datastore.VMMFailed {
			next.State = datastore.InstanceFailed
		}
		changed = true
	}
	if !changed {
		return rt, false
	}
	next.Generation, next.TimeUpdated = rt.Generation+1, now
	return next, true
}

// NeedsSettling reports whether Settle would change the instance.
func NeedsSettling(s datastore.InstanceSnapshot) bool {
	_, changed := Settle(s, time.Time{})
	return changed
}
