package sledclient

import (
	"fmt"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus/datastore"
)

var vmmStates = map[sledagentv1.VmmState]datastore.VMMState{
	sledagentv1.VmmState_VMM_STATE_STARTING:  datastore.VMMStarting,
	sledagentv1.VmmState_VMM_STATE_RUNNING:   datastore.VMMRunning,
	sledagentv1.VmmState_VMM_STATE_STOPPING:  datastore.VMMStopping,
	sledagentv1.VmmState_VMM_STATE_STOPPED:   datastore.VMMStopped,
	sledagentv1.VmmState_VMM_STATE_REBOOTING: datastore.VMMRebooting,
	sledagentv1.VmmState_VMM_STATE_MIGRATING: datastore.VMMMigrating,
	sledagentv1.VmmState_VMM_STATE_FAILED:    datastore.VMMFailed,
	sledagentv1.VmmState_VMM_STATE_DESTROYED: datastore.VMMDestroyed,
}

// Runtime converts a runtime a sled-agent reported.
func Runtime(rt *sledagentv1.VmmRuntime) (datastore.VMMRuntime, error) {
	state, ok := vmmStates[rt.GetState()]
	if !ok || rt.GetGeneration() == 0 {
		return datastore.VMMRuntime{}, fmt.Errorf("sled-agent reported an invalid VMM runtime %v", rt)
	}
	return datastore.VMMRuntime{State: state, Generation: rt.GetGeneration(), TimeUpdated: rt.GetTimeUpdated().AsTime()}, nil
}

var migrationStates = map[sledagentv1.MigrationState]datastore.MigrationState{
	sledagentv1.MigrationState_MIGRATION_STATE_PENDING:     datastore.MigrationPending,
	sledagentv1.MigrationState_MIGRATION_STATE_IN_PROGRESS: datastore.MigrationInProgress,
	sledagentv1.MigrationState_MIGRATION_STATE_COMPLETED:   datastore.MigrationCompleted,
	sledagentv1.MigrationState_MIGRATION_STATE_FAILED:      datastore.MigrationFailed,
}

// MigrationSide is one side's progress of a migration as a sled-agent
// reported it.
type MigrationSide struct {
	ID         uuid.UUID
	Side       datastore.MigrationSide
	State      datastore.MigrationState
	Generation uint64
}

// Migration converts a migration runtime a sled-agent reported.
func Migration(m *sledagentv1.MigrationRuntime, side datastore.MigrationSide) (MigrationSide, error) {
	id, err := uuid.Parse(m.GetMigrationId())
	state, ok := migrationStates[m.GetState()]
	if err != nil || !ok || m.GetGeneration() == 0 {
		return MigrationSide{}, fmt.Errorf("sled-agent reported an invalid migration runtime %v", m)
	}
	return MigrationSide{ID: id, Side: side, State: state, Generation: m.GetGeneration()}, nil
}
