package model

import (
	"time"

	"github.com/google/uuid"
)

// InstanceState is the stored state of an instance (SPEC N2); the state
// users see is computed from it and the active VMM (N4, RunState).
type InstanceState string

const (
	InstanceCreating  InstanceState = "creating"
	InstanceNoVMM     InstanceState = "no_vmm"
	InstanceVMM       InstanceState = "vmm"
	InstanceFailed    InstanceState = "failed"
	InstanceDestroyed InstanceState = "destroyed"
)

// IntendedState is what the user last asked an instance to be.
type IntendedState string

const (
	IntendRunning       IntendedState = "running"
	IntendStopped       IntendedState = "stopped"
	IntendGuestShutdown IntendedState = "guest_shutdown"
	IntendDestroyed     IntendedState = "destroyed"
)

// AutoRestartPolicy says whether a failed instance is reincarnated.
type AutoRestartPolicy string

const (
	AutoRestartNever      AutoRestartPolicy = "never"
	AutoRestartBestEffort AutoRestartPolicy = "best_effort"
)

// InstanceRuntime is the part of an instance the generation guards (N3).
type InstanceRuntime struct {
	State       InstanceState
	ActiveVMM   *uuid.UUID
	TargetVMM   *uuid.UUID
	MigrationID *uuid.UUID
	Generation  uint64
	TimeUpdated time.Time
}

// Next is the runtime that follows rt at the next generation, as of now,
// with its state and links set by the caller.
func (rt InstanceRuntime) Next(now time.Time) InstanceRuntime {
	next := rt
	next.Generation, next.TimeUpdated = rt.Generation+1, now
	return next
}

// Instance is a virtual machine as users know it.
type Instance struct {
	ID                    uuid.UUID
	ProjectID             uuid.UUID
	Name                  string
	Description           string
	Hostname              string
	NCPUs                 int64
	MemoryBytes           int64
	Runtime               InstanceRuntime
	IntendedState         IntendedState
	AutoRestartPolicy     AutoRestartPolicy
	TimeLastAutoRestarted *time.Time
	UpdaterID             *uuid.UUID
	UpdaterGen            uint64
	TimeCreated           time.Time
	TimeModified          time.Time
}

// InstanceShape is what an update of a stopped instance may change.
type InstanceShape struct {
	NCPUs             int64
	MemoryBytes       int64
	AutoRestartPolicy AutoRestartPolicy
}

// InstanceSnapshot is an instance with the VMMs and migration its runtime
// points at, read together: what the instance update (N6) decides from.
type InstanceSnapshot struct {
	Instance  Instance
	Active    *VMM
	Target    *VMM
	Migration *Migration
}

// Attach links v where the instance's runtime points at it.
func (s *InstanceSnapshot) Attach(v VMM) {
	switch rt := s.Instance.Runtime; {
	case rt.ActiveVMM != nil && v.ID == *rt.ActiveVMM:
		s.Active = &v
	case rt.TargetVMM != nil && v.ID == *rt.TargetVMM:
		s.Target = &v
	}
}

// Relinked is the snapshot after its instance's runtime became next: the
// same VMMs and migration, linked as next says.
func (s InstanceSnapshot) Relinked(next InstanceRuntime) InstanceSnapshot {
	out := InstanceSnapshot{Instance: s.Instance}
	out.Instance.Runtime = next
	for _, v := range []*VMM{s.Active, s.Target} {
		if v != nil {
			out.Attach(*v)
		}
	}
	if next.MigrationID != nil && s.Migration != nil && *next.MigrationID == s.Migration.ID {
		out.Migration = s.Migration
	}
	return out
}

// LiveVMMs are the snapshot's VMMs not yet ended in the database: the ones
// force-terminate must end (F3). A VMM already destroyed, unwound or failed
// is left alone without calling its sled.
func (s InstanceSnapshot) LiveVMMs() []VMM {
	var out []VMM
	for _, v := range []*VMM{s.Active, s.Target} {
		if v != nil && !v.Runtime.State.Terminal() {
			out = append(out, *v)
		}
	}
	return out
}
