package vmm

import (
	"errors"
	"time"

	"github.com/google/uuid"
)

// State is a VMM's state as the sled reports it (V6).
type State int

const (
	StateStarting State = iota + 1
	StateRunning
	StateStopping
	StateStopped
	StateRebooting
	StateMigrating
	StateFailed
	StateDestroyed
)

var stateNames = map[State]string{
	StateStarting: "starting", StateRunning: "running", StateStopping: "stopping", StateStopped: "stopped",
	StateRebooting: "rebooting", StateMigrating: "migrating", StateFailed: "failed", StateDestroyed: "destroyed",
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return "unknown"
}

// Target is a state EnsureState can ask for (V2).
type Target int

const (
	TargetRunning Target = iota + 1
	TargetStopped
	TargetReboot
	TargetMigrationTarget
)

var targetNames = map[Target]string{
	TargetRunning: "running", TargetStopped: "stopped", TargetReboot: "reboot", TargetMigrationTarget: "migration target",
}

func (t Target) String() string {
	if n, ok := targetNames[t]; ok {
		return n
	}
	return "unknown"
}

// MigrationState is the progress of one side of a migration.
type MigrationState int

const (
	MigrationPending MigrationState = iota + 1
	MigrationInProgress
	MigrationCompleted
	MigrationFailed
)

// Runtime is a VMM's state and its generation.
type Runtime struct {
	State       State
	Generation  uint64
	TimeUpdated time.Time
}

// Migration is one side of a migration as this sled sees it.
type Migration struct {
	ID          uuid.UUID
	State       MigrationState
	Generation  uint64
	TimeUpdated time.Time
}

// Spec is what a VMM is made of.
type Spec struct {
	NCPUs       int32
	MemoryBytes int64
	Hostname    string
}

// MigrationTarget says where a migration-target VMM pulls its guest from.
type MigrationTarget struct {
	MigrationID       uuid.UUID
	SourceVMM         uuid.UUID
	SourceSledAddress string
}

// Registration is a validated EnsureRegistered request.
type Registration struct {
	VMM               uuid.UUID
	Instance          uuid.UUID
	Spec              Spec
	InitialGeneration uint64
	MigrationTarget   *MigrationTarget
}

// View is a registered VMM as callers see it, or the final view of one
// that ended.
type View struct {
	VMM          uuid.UUID
	Instance     uuid.UUID
	Runtime      Runtime
	MigrationIn  *Migration
	MigrationOut *Migration
}

// Update is one published change of a VMM (V5).
type Update struct {
	VMM          uuid.UUID
	Runtime      Runtime
	MigrationIn  *Migration
	MigrationOut *Migration
}

// MigrationChange is a new state of one side of a migration.
type MigrationChange struct {
	ID    uuid.UUID
	State MigrationState
}

// Observation is what the hypervisor reports when a VMM's state changes.
// A nil migration change means "no change" for that side.
type Observation struct {
	// Incarnation is the one Hypervisor.Launch returned for the VMM; an
	// observation of an earlier incarnation of the same id is stale.
	Incarnation  uint64
	State        State
	MigrationIn  *MigrationChange
	MigrationOut *MigrationChange
}

var (
	// ErrNoSuchVMM means the sled does not know the VMM (never did, or
	// forgot it): the one answer nexus treats as "VMM gone". A VMM that
	// ended here is not unknown.
	ErrNoSuchVMM = errors.New("no such VMM on this sled")
	// ErrAlreadyExists means the VMM id is registered for another instance
	// or with another spec, or ended here as another instance's VMM.
	ErrAlreadyExists = errors.New("VMM already registered differently")
	// ErrUnreachableTarget means the VMM cannot move to the requested
	// state from where it is (a stopping VMM cannot run again, say).
	ErrUnreachableTarget = errors.New("VMM cannot reach the requested state")
)
