package model

import (
	"time"

	"github.com/google/uuid"
)

// MigrationState is one side's progress of a migration.
type MigrationState string

const (
	MigrationPending    MigrationState = "pending"
	MigrationInProgress MigrationState = "in_progress"
	MigrationCompleted  MigrationState = "completed"
	MigrationFailed     MigrationState = "failed"
)

// Terminal reports whether this side of the migration has ended.
func (s MigrationState) Terminal() bool { return s == MigrationCompleted || s == MigrationFailed }

// MigrationSide names one side of a migration.
type MigrationSide string

const (
	MigrationSource MigrationSide = "source"
	MigrationTarget MigrationSide = "target"
)

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

// MigrationReport is one side's progress as a sled-agent reported it.
type MigrationReport struct {
	ID         uuid.UUID
	Side       MigrationSide
	State      MigrationState
	Generation uint64
}
