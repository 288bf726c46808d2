// Package wire converts the sledagent.v1 messages nexus exchanges with
// sled-agents to and from nexus's model. Two edges speak them: the
// sled-agent client (sledclient), which reads VMM runtimes in the agents'
// answers, and the NexusInternal handlers (api), which read the runtimes
// and migration sides the agents publish. Both convert here, so a state
// means the same whichever way it arrived.
package wire

import (
	"fmt"
	"strings"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus/model"
)

var vmmStates = map[sledagentv1.VmmState]model.VMMState{
	sledagentv1.VmmState_VMM_STATE_STARTING:  model.VMMStarting,
	sledagentv1.VmmState_VMM_STATE_RUNNING:   model.VMMRunning,
	sledagentv1.VmmState_VMM_STATE_STOPPING:  model.VMMStopping,
	sledagentv1.VmmState_VMM_STATE_STOPPED:   model.VMMStopped,
	sledagentv1.VmmState_VMM_STATE_REBOOTING: model.VMMRebooting,
	sledagentv1.VmmState_VMM_STATE_MIGRATING: model.VMMMigrating,
	sledagentv1.VmmState_VMM_STATE_FAILED:    model.VMMFailed,
	sledagentv1.VmmState_VMM_STATE_DESTROYED: model.VMMDestroyed,
}

// ErrInvalid means a sled-agent sent a message that does not describe a
// VMM or migration state.
var ErrInvalid = fmt.Errorf("invalid runtime from a sled-agent")

// Runtime converts a VMM runtime a sled-agent reported.
func Runtime(rt *sledagentv1.VmmRuntime) (model.VMMRuntime, error) {
	state, ok := vmmStates[rt.GetState()]
	switch {
	case rt == nil:
		return model.VMMRuntime{}, fmt.Errorf("%w: no VMM runtime", ErrInvalid)
	case !ok:
		return model.VMMRuntime{}, fmt.Errorf("%w: unknown VMM state %s", ErrInvalid, rt.GetState())
	case rt.GetGeneration() == 0:
		return model.VMMRuntime{}, fmt.Errorf("%w: VMM generation 0", ErrInvalid)
	}
	return model.VMMRuntime{State: state, Generation: rt.GetGeneration(), TimeUpdated: rt.GetTimeUpdated().AsTime()}, nil
}

var migrationStates = map[sledagentv1.MigrationState]model.MigrationState{
	sledagentv1.MigrationState_MIGRATION_STATE_PENDING:     model.MigrationPending,
	sledagentv1.MigrationState_MIGRATION_STATE_IN_PROGRESS: model.MigrationInProgress,
	sledagentv1.MigrationState_MIGRATION_STATE_COMPLETED:   model.MigrationCompleted,
	sledagentv1.MigrationState_MIGRATION_STATE_FAILED:      model.MigrationFailed,
}

// Migration converts one side of a migration a sled-agent reported.
func Migration(m *sledagentv1.MigrationRuntime, side model.MigrationSide) (model.MigrationReport, error) {
	id, err := uuid.Parse(m.GetMigrationId())
	state, ok := migrationStates[m.GetState()]
	if err != nil || !ok || m.GetGeneration() == 0 {
		return model.MigrationReport{}, fmt.Errorf("%w: migration runtime %v", ErrInvalid, m)
	}
	return model.MigrationReport{ID: id, Side: side, State: state, Generation: m.GetGeneration()}, nil
}

var targets = map[model.VMMTarget]sledagentv1.VmmTargetState{
	model.TargetRunning:         sledagentv1.VmmTargetState_VMM_TARGET_STATE_RUNNING,
	model.TargetStopped:         sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED,
	model.TargetReboot:          sledagentv1.VmmTargetState_VMM_TARGET_STATE_REBOOT,
	model.TargetMigrationTarget: sledagentv1.VmmTargetState_VMM_TARGET_STATE_MIGRATION_TARGET,
}

// Target is the wire form of a target state.
func Target(t model.VMMTarget) sledagentv1.VmmTargetState { return targets[t] }

// Spec is the wire form of a VMM spec.
func Spec(s model.VMMSpec) *sledagentv1.VmmSpec {
	return &sledagentv1.VmmSpec{Ncpus: int32(s.NCPUs), MemoryBytes: s.MemoryBytes, Hostname: s.Hostname}
}

// ZoneKind is the wire enum of a zone kind: the proto's own name for it
// (ZONE_KIND_INTERNAL_NTP for "internal_ntp"); unspecified for a kind the
// proto does not know.
func ZoneKind(k model.ZoneKind) sledagentv1.ZoneKind {
	return sledagentv1.ZoneKind(sledagentv1.ZoneKind_value["ZONE_KIND_"+strings.ToUpper(string(k))])
}

// ZonesConfig is the wire form of a sled's zones config.
func ZonesConfig(s model.SledZones) *sledagentv1.OmicronZonesConfig {
	out := &sledagentv1.OmicronZonesConfig{Generation: s.Generation}
	for _, z := range s.Zones {
		zone := &sledagentv1.OmicronZoneConfig{Id: z.ID.String(), Kind: ZoneKind(z.Kind), FilesystemPool: z.Pool, Address: z.Address}
		if n := z.Nexus; n != nil {
			zone.Nexus = &sledagentv1.NexusZoneDetails{ExternalAddress: n.ExternalAddress, MetricsAddress: n.MetricsAddress,
				DatabaseBackend: n.DatabaseBackend, DatabaseUrl: n.DatabaseURL}
		}
		out.Zones = append(out.Zones, zone)
	}
	return out
}
