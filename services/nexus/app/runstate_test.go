package app_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/datastore"
)

// N4, F1: the external state comes from the instance's migration id and its
// active VMM's state. A VMM still reporting `migrating` after the instance's
// migration was cleared (a force-terminate ended the target before the
// source's sled reported the guest back) runs the guest: `running`, so a
// force-terminate that lost to a later start never answers `migrating`.
func TestN4_RunStateFollowsTheMigrationIDAndTheActiveVMM(t *testing.T) {
	vmm := func(state datastore.VMMState) *datastore.VMM {
		return &datastore.VMM{ID: uuid.New(), Runtime: datastore.VMMRuntime{State: state}}
	}
	migration := uuid.New()
	for _, tc := range []struct {
		name      string
		state     datastore.InstanceState
		migration *uuid.UUID
		intended  datastore.IntendedState
		active    *datastore.VMM
		want      string
	}{
		{"no VMM", datastore.InstanceNoVMM, nil, datastore.IntendStopped, nil, "stopped"},
		{"failed", datastore.InstanceFailed, nil, datastore.IntendStopped, nil, "failed"},
		{"a migration recorded", datastore.InstanceVMM, &migration, datastore.IntendRunning, vmm(datastore.VMMMigrating), "migrating"},
		{"a migration recorded, source still running", datastore.InstanceVMM, &migration, datastore.IntendRunning, vmm(datastore.VMMRunning), "migrating"},
		{"a migration over, source not reported back yet", datastore.InstanceVMM, nil, datastore.IntendRunning, vmm(datastore.VMMMigrating), "running"},
		{"running", datastore.InstanceVMM, nil, datastore.IntendRunning, vmm(datastore.VMMRunning), "running"},
		{"stop accepted", datastore.InstanceVMM, nil, datastore.IntendStopped, vmm(datastore.VMMRunning), "stopping"},
		{"starting", datastore.InstanceVMM, nil, datastore.IntendRunning, vmm(datastore.VMMStarting), "starting"},
		{"rebooting", datastore.InstanceVMM, nil, datastore.IntendRunning, vmm(datastore.VMMRebooting), "rebooting"},
		{"VMM gone, not unlinked yet", datastore.InstanceVMM, nil, datastore.IntendRunning, vmm(datastore.VMMDestroyed), "stopping"},
		{"start unwound", datastore.InstanceVMM, nil, datastore.IntendRunning, vmm(datastore.VMMSagaUnwound), "failed"},
	} {
		inst := datastore.Instance{IntendedState: tc.intended,
			Runtime: datastore.InstanceRuntime{State: tc.state, MigrationID: tc.migration}}
		if got := app.RunState(inst, tc.active); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
