package model

import "time"

// Settle computes the runtime an instance's VMMs and migration call for
// (N6); changed is false when the instance already is what they call for.
// It is the one place these rules live: the update saga, force-terminate
// and the background updater all settle through it.
//
//   - A migration that either side saw complete makes the target the
//     active VMM, once the target's sled has reported it at all: until
//     then its record says starting, as registered, and the instance
//     would show starting with its guest running there (R1). It shows
//     migrating until that report, which follows at once.
//   - A migration whose target is terminal ended without moving the guest:
//     the source stays active. (A source that failed or vanished mid-pull
//     fails its target, so waiting for the target decides every case.)
//   - With no migration left, a terminal active VMM is unlinked: the
//     instance is failed when that VMM failed, no_vmm otherwise.
func Settle(s InstanceSnapshot, now time.Time) (InstanceRuntime, bool) {
	rt := s.Instance.Runtime
	if rt.State != InstanceVMM {
		return rt, false
	}
	next, changed, active := rt, false, s.Active
	if rt.MigrationID != nil {
		switch {
		case s.Migration != nil && s.Migration.Succeeded() && !s.Target.notYetHeardFrom():
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
		next.State, next.ActiveVMM, next.TargetVMM = InstanceNoVMM, nil, nil
		if active != nil && active.Runtime.State == VMMFailed {
			next.State = InstanceFailed
		}
		changed = true
	}
	if !changed {
		return rt, false
	}
	return next.Next(now), true
}

// NeedsSettling reports whether Settle would change the instance.
func NeedsSettling(s InstanceSnapshot) bool {
	_, changed := Settle(s, time.Time{})
	return changed
}

// SettleNow is Settle as of the moment it is called.
func SettleNow(s InstanceSnapshot) (InstanceRuntime, bool) { return Settle(s, time.Now()) }

// notYetHeardFrom says a VMM's sled has not reported it since it was
// registered: its record still holds the state nexus gave it.
func (v *VMM) notYetHeardFrom() bool {
	return v != nil && (v.Runtime.State == VMMCreating || v.Runtime.State == VMMStarting)
}
