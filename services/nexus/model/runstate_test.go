package model_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
)

// N4, F1: the external state comes from the instance's migration id and its
// active VMM's state. A VMM still reporting `migrating` after the instance's
// migration was cleared (a force-terminate ended the target before the
// source's sled reported the guest back) runs the guest: `running`, so a
// force-terminate that lost to a later start never answers `migrating`.
func TestN4_RunStateFollowsTheMigrationIDAndTheActiveVMM(t *testing.T) {
	vmm := func(state model.VMMState) *model.VMM {
		return &model.VMM{ID: uuid.New(), Runtime: model.VMMRuntime{State: state}}
	}
	migration := uuid.New()
	for _, tc := range []struct {
		name      string
		state     model.InstanceState
		migration *uuid.UUID
		intended  model.IntendedState
		active    *model.VMM
		want      string
	}{
		{"no VMM", model.InstanceNoVMM, nil, model.IntendStopped, nil, "stopped"},
		{"failed", model.InstanceFailed, nil, model.IntendStopped, nil, "failed"},
		{"a migration recorded", model.InstanceVMM, &migration, model.IntendRunning, vmm(model.VMMMigrating), "migrating"},
		{"a migration recorded, source still running", model.InstanceVMM, &migration, model.IntendRunning, vmm(model.VMMRunning), "migrating"},
		{"a migration over, source not reported back yet", model.InstanceVMM, nil, model.IntendRunning, vmm(model.VMMMigrating), "running"},
		{"running", model.InstanceVMM, nil, model.IntendRunning, vmm(model.VMMRunning), "running"},
		{"stop accepted", model.InstanceVMM, nil, model.IntendStopped, vmm(model.VMMRunning), "stopping"},
		// A stop answered while a migration was still settling wants the
		// guest stopped wherever it ends: never `running` again (R1).
		{"stop accepted, a migration over, source not reported back yet", model.InstanceVMM, nil, model.IntendStopped, vmm(model.VMMMigrating), "stopping"},
		{"starting", model.InstanceVMM, nil, model.IntendRunning, vmm(model.VMMStarting), "starting"},
		{"rebooting", model.InstanceVMM, nil, model.IntendRunning, vmm(model.VMMRebooting), "rebooting"},
		{"VMM gone, not unlinked yet", model.InstanceVMM, nil, model.IntendRunning, vmm(model.VMMDestroyed), "stopping"},
		{"start unwound", model.InstanceVMM, nil, model.IntendRunning, vmm(model.VMMSagaUnwound), "failed"},
	} {
		inst := model.Instance{IntendedState: tc.intended,
			Runtime: model.InstanceRuntime{State: tc.state, MigrationID: tc.migration}}
		if got := model.RunState(inst, tc.active); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
