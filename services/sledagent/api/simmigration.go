package api

import (
	"context"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	hypervisorsim "github.com/rackplane/rackplane/services/sledagent/hypervisor/sim"
)

// SimMigration serves the simulated hypervisors' migration protocol.
type SimMigration struct {
	sledagentv1.UnimplementedSimMigrationServer
	hypervisor *hypervisorsim.Hypervisor
}

// NewSimMigration returns the migration-protocol handlers over hypervisor.
func NewSimMigration(hypervisor *hypervisorsim.Hypervisor) *SimMigration {
	return &SimMigration{hypervisor: hypervisor}
}

func (h *SimMigration) BeginMigrationOut(_ context.Context, req *sledagentv1.BeginMigrationOutRequest) (*sledagentv1.BeginMigrationOutResponse, error) {
	var v apierror.Violations
	source := v.UUID("source_vmm_id", req.GetSourceVmmId())
	migration := v.UUID("migration_id", req.GetMigrationId())
	v.UUID("target_vmm_id", req.GetTargetVmmId())
	if err := v.Err(); err != nil {
		return nil, toStatus(err)
	}
	if err := h.hypervisor.BeginMigrationOut(source, migration); err != nil {
		return nil, toStatus(err)
	}
	return &sledagentv1.BeginMigrationOutResponse{}, nil
}

func (h *SimMigration) EndMigrationOut(_ context.Context, req *sledagentv1.EndMigrationOutRequest) (*sledagentv1.EndMigrationOutResponse, error) {
	var v apierror.Violations
	source := v.UUID("source_vmm_id", req.GetSourceVmmId())
	migration := v.UUID("migration_id", req.GetMigrationId())
	if err := v.Err(); err != nil {
		return nil, toStatus(err)
	}
	if err := h.hypervisor.EndMigrationOut(source, migration, req.GetSucceeded()); err != nil {
		return nil, toStatus(err)
	}
	return &sledagentv1.EndMigrationOutResponse{}, nil
}
