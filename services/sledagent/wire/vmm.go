// Package wire converts between the sled-agent's domain types and the
// sledagent.v1 messages that carry them. Two edges speak those messages:
// the SledAgent handlers (api), for what nexus asks and what the agent
// answers, and the publisher to nexus (nexusclient), whose VMM updates
// carry the same runtime and migration messages. Both convert here.
package wire

import (
	"regexp"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/sledagent/vmm"
)

const gibibyte = 1 << 30

var hostnamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// ParseRegistration validates an EnsureRegistered request, reporting every
// problem by field.
func ParseRegistration(req *sledagentv1.EnsureRegisteredRequest) (vmm.Registration, error) {
	var v apierror.Violations
	r := vmm.Registration{
		VMM:               v.UUID("vmm_id", req.GetVmmId()),
		Instance:          v.UUID("instance_id", req.GetInstanceId()),
		InitialGeneration: 1,
	}
	if req.GetSpec() == nil {
		v.Add("spec", "is required")
	} else {
		s := req.GetSpec()
		r.Spec = vmm.Spec{NCPUs: s.GetNcpus(), MemoryBytes: s.GetMemoryBytes(), Hostname: s.GetHostname()}
		if s.GetNcpus() < 1 {
			v.Add("spec.ncpus", "must be at least 1, got %d", s.GetNcpus())
		}
		switch {
		case s.GetMemoryBytes() < gibibyte:
			v.Add("spec.memory_bytes", "must be at least 1 GiB, got %d bytes", s.GetMemoryBytes())
		case s.GetMemoryBytes()%gibibyte != 0:
			v.Add("spec.memory_bytes", "must be a whole number of GiB, got %d bytes", s.GetMemoryBytes())
		}
		if !hostnamePattern.MatchString(s.GetHostname()) {
			v.Add("spec.hostname", "%q is not 1-63 letters, digits and inner hyphens", s.GetHostname())
		}
	}
	if rt := req.GetInitialRuntime(); rt != nil {
		if rt.GetGeneration() == 0 {
			v.Add("initial_runtime.generation", "must be at least 1")
		}
		r.InitialGeneration = rt.GetGeneration()
	}
	if mt := req.GetMigrationTarget(); mt != nil {
		r.MigrationTarget = &vmm.MigrationTarget{
			MigrationID:       v.UUID("migration_target.migration_id", mt.GetMigrationId()),
			SourceVMM:         v.UUID("migration_target.source_vmm_id", mt.GetSourceVmmId()),
			SourceSledAddress: mt.GetSourceSledAddress(),
		}
		if mt.GetSourceSledAddress() == "" {
			v.Add("migration_target.source_sled_address", "is required")
		}
		if r.MigrationTarget.SourceVMM == r.VMM && r.VMM != uuid.Nil {
			v.Add("migration_target.source_vmm_id", "is the VMM being registered")
		}
	}
	return r, v.Err()
}

var targetsByProto = map[sledagentv1.VmmTargetState]vmm.Target{
	sledagentv1.VmmTargetState_VMM_TARGET_STATE_RUNNING:          vmm.TargetRunning,
	sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED:          vmm.TargetStopped,
	sledagentv1.VmmTargetState_VMM_TARGET_STATE_REBOOT:           vmm.TargetReboot,
	sledagentv1.VmmTargetState_VMM_TARGET_STATE_MIGRATION_TARGET: vmm.TargetMigrationTarget,
}

// ParseEnsureState validates an EnsureState request.
func ParseEnsureState(req *sledagentv1.EnsureStateRequest) (uuid.UUID, vmm.Target, error) {
	var v apierror.Violations
	id := v.UUID("vmm_id", req.GetVmmId())
	target, ok := targetsByProto[req.GetTarget()]
	if !ok {
		v.Add("target", "unknown target state %s", req.GetTarget())
	}
	return id, target, v.Err()
}

// ParseVMMID validates a request's vmm_id.
func ParseVMMID(id string) (uuid.UUID, error) {
	var v apierror.Violations
	parsed := v.UUID("vmm_id", id)
	return parsed, v.Err()
}

var vmmStates = map[vmm.State]sledagentv1.VmmState{
	vmm.StateStarting:  sledagentv1.VmmState_VMM_STATE_STARTING,
	vmm.StateRunning:   sledagentv1.VmmState_VMM_STATE_RUNNING,
	vmm.StateStopping:  sledagentv1.VmmState_VMM_STATE_STOPPING,
	vmm.StateStopped:   sledagentv1.VmmState_VMM_STATE_STOPPED,
	vmm.StateRebooting: sledagentv1.VmmState_VMM_STATE_REBOOTING,
	vmm.StateMigrating: sledagentv1.VmmState_VMM_STATE_MIGRATING,
	vmm.StateFailed:    sledagentv1.VmmState_VMM_STATE_FAILED,
	vmm.StateDestroyed: sledagentv1.VmmState_VMM_STATE_DESTROYED,
}

var migrationStates = map[vmm.MigrationState]sledagentv1.MigrationState{
	vmm.MigrationPending:    sledagentv1.MigrationState_MIGRATION_STATE_PENDING,
	vmm.MigrationInProgress: sledagentv1.MigrationState_MIGRATION_STATE_IN_PROGRESS,
	vmm.MigrationCompleted:  sledagentv1.MigrationState_MIGRATION_STATE_COMPLETED,
	vmm.MigrationFailed:     sledagentv1.MigrationState_MIGRATION_STATE_FAILED,
}

// RuntimeProto is the wire form of a VMM runtime.
func RuntimeProto(r vmm.Runtime) *sledagentv1.VmmRuntime {
	return &sledagentv1.VmmRuntime{State: vmmStates[r.State], Generation: r.Generation,
		TimeUpdated: timestamppb.New(r.TimeUpdated)}
}

// MigrationProto is the wire form of a migration side, nil for none.
func MigrationProto(m *vmm.Migration) *sledagentv1.MigrationRuntime {
	if m == nil {
		return nil
	}
	return &sledagentv1.MigrationRuntime{MigrationId: m.ID.String(), State: migrationStates[m.State],
		Generation: m.Generation, TimeUpdated: timestamppb.New(m.TimeUpdated)}
}
