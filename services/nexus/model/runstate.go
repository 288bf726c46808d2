package model

// RunState computes an instance's external state (N4); it is never stored.
// active is the instance's active VMM, nil when it has none.
func RunState(inst Instance, active *VMM) string {
	switch inst.Runtime.State {
	case InstanceNoVMM:
		return "stopped"
	case InstanceFailed:
		return "failed"
	case InstanceCreating:
		return "creating"
	case InstanceDestroyed:
		return "destroyed"
	}
	if inst.Runtime.MigrationID != nil {
		return "migrating"
	}
	if active == nil {
		return "starting"
	}
	stopRequested := inst.IntendedState == IntendStopped
	switch active.Runtime.State {
	case VMMCreating, VMMStarting, VMMRunning, VMMRebooting, VMMMigrating:
		if stopRequested {
			// The sled took the stop but its VMM has not reported stopping
			// yet: say what is happening rather than what was.
			return "stopping"
		}
	}
	switch active.Runtime.State {
	case VMMCreating, VMMStarting:
		return "starting"
	case VMMRunning:
		return "running"
	case VMMRebooting:
		return "rebooting"
	case VMMMigrating:
		// The instance records no migration (that returned above): the
		// one its VMM last reported is over, ended by an update or a
		// force-terminate before the sled said so, and the guest runs on
		// here (F1).
		return "running"
	case VMMSagaUnwound:
		return "failed"
	}
	// stopping, stopped, destroyed or failed: stopping until an update saga
	// unlinks the VMM.
	return "stopping"
}

// RunState is the snapshot's instance's external state (N4).
func (s InstanceSnapshot) RunState() string { return RunState(s.Instance, s.Active) }
