package api

import (
	"context"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/services/nexus/app"
)

// Internal serves NexusInternal, the API sled-agents call.
type Internal struct {
	nexusv1.UnimplementedNexusInternalServer
	nexus *app.Nexus
}

// NewInternal returns the internal API handlers.
func NewInternal(n *app.Nexus) *Internal { return &Internal{nexus: n} }

func (h *Internal) RegisterSled(ctx context.Context, req *nexusv1.RegisterSledRequest) (*nexusv1.RegisterSledResponse, error) {
	if err := h.nexus.SledRegister(ctx, req); err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.RegisterSledResponse{}, nil
}

func (h *Internal) SledHeartbeat(ctx context.Context, req *nexusv1.SledHeartbeatRequest) (*nexusv1.SledHeartbeatResponse, error) {
	if err := h.nexus.SledHeartbeat(ctx, req.GetSledId()); err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.SledHeartbeatResponse{}, nil
}

func (h *Internal) VmmStateUpdate(ctx context.Context, req *nexusv1.VmmStateUpdateRequest) (*nexusv1.VmmStateUpdateResponse, error) {
	if _, err := h.nexus.VMMStateUpdate(ctx, req); err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.VmmStateUpdateResponse{}, nil
}
