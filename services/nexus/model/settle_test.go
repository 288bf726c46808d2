package model_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
)

// N4, N6, R1: a migration its source saw complete makes the target active
// only once the target's sled has reported the target: until then the
// target's record says starting, as registered, and the instance would
// show starting, as if restarted, with its guest running there. It shows
// migrating until that report.
func TestN6_AMigrationCompleteAtItsSourceWaitsForTheTargetsFirstReport(t *testing.T) {
	source, target, migration := uuid.New(), uuid.New(), uuid.New()
	snapshot := func(targetState model.VMMState) model.InstanceSnapshot {
		return model.InstanceSnapshot{
			Instance: model.Instance{IntendedState: model.IntendRunning, Runtime: model.InstanceRuntime{
				State: model.InstanceVMM, ActiveVMM: &source, TargetVMM: &target, MigrationID: &migration, Generation: 5}},
			Active:    &model.VMM{ID: source, Runtime: model.VMMRuntime{State: model.VMMDestroyed}},
			Target:    &model.VMM{ID: target, Runtime: model.VMMRuntime{State: targetState}},
			Migration: &model.Migration{ID: migration, SourceVMM: source, TargetVMM: target, SourceState: model.MigrationCompleted},
		}
	}
	for state, promoted := range map[model.VMMState]bool{
		model.VMMStarting:  false,
		model.VMMCreating:  false,
		model.VMMMigrating: true,
		model.VMMRunning:   true,
	} {
		s := snapshot(state)
		next, _ := model.Settle(s, time.Now())
		if got := next.ActiveVMM != nil && *next.ActiveVMM == target; got != promoted {
			t.Errorf("target %s: promoted %v, want %v", state, got, promoted)
		}
		s.Instance.Runtime = next
		active := s.Active
		if promoted {
			active = s.Target
		}
		want := "migrating"
		if promoted {
			want = "running"
		}
		if got := model.RunState(s.Instance, active); got != want {
			t.Errorf("target %s: shows %s, want %s", state, got, want)
		}
	}
}
