package model

import (
	"time"

	"github.com/google/uuid"
)

// VMMState is the stored state of a VMM.
type VMMState string

const (
	VMMCreating    VMMState = "creating"
	VMMStarting    VMMState = "starting"
	VMMRunning     VMMState = "running"
	VMMStopping    VMMState = "stopping"
	VMMStopped     VMMState = "stopped"
	VMMRebooting   VMMState = "rebooting"
	VMMMigrating   VMMState = "migrating"
	VMMFailed      VMMState = "failed"
	VMMDestroyed   VMMState = "destroyed"
	VMMSagaUnwound VMMState = "saga_unwound"
)

// Terminal reports whether a VMM in this state will never run again.
func (s VMMState) Terminal() bool {
	return s == VMMDestroyed || s == VMMFailed || s == VMMSagaUnwound
}

// FailureNoSuchVMM is the failure reason of a VMM its sled-agent did not
// know (F5).
const FailureNoSuchVMM = "no_such_vmm"

// VMMRuntime is the part of a VMM the generation guards (N3).
type VMMRuntime struct {
	State         VMMState
	Generation    uint64
	TimeUpdated   time.Time
	FailureReason string // set with VMMFailed, e.g. FailureNoSuchVMM
}

// VMM is one incarnation of an instance on a sled.
type VMM struct {
	ID          uuid.UUID
	InstanceID  uuid.UUID
	SledID      uuid.UUID
	Runtime     VMMRuntime
	TimeCreated time.Time
}

// VMMWrite is a guarded VMM runtime write (N3).
type VMMWrite struct {
	ID      uuid.UUID
	Runtime VMMRuntime
}

// EndUnknownToSled is the end nexus records for v when its sled-agent does
// not know it (F5): failed with reason no_such_vmm, at the generation read
// plus one, so that it is written only if nobody advanced the VMM since v
// was read. A VMM still creating was never registered (its saga had not
// reached the sled): nothing failed, and it ends saga_unwound, which makes
// that saga unwind.
func EndUnknownToSled(v VMM, now time.Time) VMMRuntime {
	if v.Runtime.State == VMMCreating {
		return VMMRuntime{State: VMMSagaUnwound, Generation: v.Runtime.Generation + 1, TimeUpdated: now}
	}
	return VMMRuntime{State: VMMFailed, FailureReason: FailureNoSuchVMM, Generation: v.Runtime.Generation + 1, TimeUpdated: now}
}

// VMMTarget is a state nexus asks a sled-agent to drive a VMM toward (V2).
type VMMTarget string

const (
	TargetRunning         VMMTarget = "running"
	TargetStopped         VMMTarget = "stopped"
	TargetReboot          VMMTarget = "reboot"
	TargetMigrationTarget VMMTarget = "migration_target"
)

// VMMSpec is what a sled-agent is told to run for an instance.
type VMMSpec struct {
	NCPUs       int64
	MemoryBytes int64
	Hostname    string
}

// Spec is the VMM an instance needs.
func (i Instance) Spec() VMMSpec {
	return VMMSpec{NCPUs: i.NCPUs, MemoryBytes: i.MemoryBytes, Hostname: i.Hostname}
}
