package vmm

import (
	"regexp"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
)

const gibibyte = 1 << 30

var hostnamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// ParseRegistration validates an EnsureRegistered request, reporting every
// problem by field.
func ParseRegistration(req *sledagentv1.EnsureRegisteredRequest) (Registration, error) {
	var v apierror.Violations
	r := Registration{
		VMM:               v.UUID("vmm_id", req.GetVmmId()),
		Instance:          v.UUID("instance_id", req.GetInstanceId()),
		InitialGeneration: 1,
	}
	if req.GetSpec() == nil {
		v.Add("spec", "is required")
	} else {
		s := req.GetSpec()
		r.Spec = Spec{NCPUs: s.GetNcpus(), MemoryBytes: s.GetMemoryBytes(), Hostname: s.GetHostname()}
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
		r.MigrationTarget = &MigrationTarget{
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

var targetsByProto = map[sledagentv1.VmmTargetState]Target{
	sledagentv1.VmmTargetState_VMM_TARGET_STATE_RUNNING:          TargetRunning,
	sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED:          TargetStopped,
	sledagentv1.VmmTargetState_VMM_TARGET_STATE_REBOOT:           TargetReboot,
	sledagentv1.VmmTargetState_VMM_TARGET_STATE_MIGRATION_TARGET: TargetMigrationTarget,
}

// ParseEnsureState validates an EnsureState request.
func ParseEnsureState(req *sledagentv1.EnsureStateRequest) (uuid.UUID, Target, error) {
	var v apierror.Violations
	id := v.UUID("vmm_id", req.GetVmmId())
	target, ok := targetsByProto[req.GetTarget()]
	if !ok {
		v.Add("target", "unknown target state %s", req.GetTarget())
	}
	return id, target, v.Err()
}
