package datastore

import (
	"time"

	"github.com/google/uuid"
)

// InstanceState is the stored state of an instance (SPEC N2); the state
// users see is computed from it and the active VMM (N4).
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

// MigrationState is one side's progress of a migration.
type MigrationState string

const (
	MigrationPending    MigrationState = "pending"
	MigrationInProgress MigrationState = "in_progress"
	MigrationCompleted  MigrationState = "completed"
	MigrationFailed     MigrationState = "failed"
)

// Sled is a server known to nexus.
type Sled struct {
	ID           uuid.UUID
	Address      string
	NCPUs        int64
	MemoryBytes  int64
	Zpools       []string
	TimeCreated  time.Time
	TimeModified time.Time
	TimeLastSeen time.Time
}

// Project groups instances.
type Project struct {
	ID           uuid.UUID
	Name         string
	Description  string
	TimeCreated  time.Time
	TimeModified time.Time
}

// InstanceRuntime is the part of an instance the generation guards (N3).
type InstanceRuntime struct {
	State       InstanceState
	ActiveVMM   *uuid.UUID
	TargetVMM   *uuid.UUID
	MigrationID *uuid.UUID
	Generation  uint64
	TimeUpdated time.Time
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

// VMMRuntime is the part of a VMM the generation guards (N3).
type VMMRuntime struct {
	State         VMMState
	Generation    uint64
	TimeUpdated   time.Time
	FailureReason string // set with VMMFailed, e.g. "no_such_vmm"
}

// VMM is one incarnation of an instance on a sled.
type VMM struct {
	ID          uuid.UUID
	InstanceID  uuid.UUID
	SledID      uuid.UUID
	Runtime     VMMRuntime
	TimeCreated time.Time
}

// Terminal reports whether this side of the migration has ended.
func (s MigrationState) Terminal() bool { return s == MigrationCompleted || s == MigrationFailed }

// Migration moves an instance from its active (source) VMM to a target VMM
// on another sled. Each side's progress is numbered by the sled-agent that
// runs that side, and written through its own generation guard.
type Migration struct {
	ID          uuid.UUID
	InstanceID  uuid.UUID
	SourceVMM   uuid.UUID
	TargetVMM   uuid.UUID
	SourceState MigrationState
	SourceGen   uint64
	TargetState MigrationState
	TargetGen   uint64
	TimeCreated time.Time
}

// Succeeded reports whether either side saw the guest move to the target.
func (m Migration) Succeeded() bool {
	return m.SourceState == MigrationCompleted || m.TargetState == MigrationCompleted
}

// MigrationSide names one side of a migration.
type MigrationSide string

const (
	MigrationSource MigrationSide = "source"
	MigrationTarget MigrationSide = "target"
)

// InstanceSnapshot is an instance with the VMMs and migration its runtime
// points at, read together: what the instance update (N6) decides from.
type InstanceSnapshot struct {
	Instance  Instance
	Active    *VMM
	Target    *VMM
	Migration *Migration
}
