package api

import (
	"context"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/sledagent/vmm"
	"github.com/rackplane/rackplane/services/sledagent/wire"
)

func (h *SledAgent) EnsureRegistered(_ context.Context, req *sledagentv1.EnsureRegisteredRequest) (*sledagentv1.EnsureRegisteredResponse, error) {
	reg, err := wire.ParseRegistration(req)
	if err != nil {
		return nil, toStatus(err)
	}
	rt, err := h.agent.EnsureRegistered(reg)
	if err != nil {
		return nil, toStatus(err)
	}
	return &sledagentv1.EnsureRegisteredResponse{Runtime: wire.RuntimeProto(rt)}, nil
}

func (h *SledAgent) EnsureState(_ context.Context, req *sledagentv1.EnsureStateRequest) (*sledagentv1.EnsureStateResponse, error) {
	id, target, err := wire.ParseEnsureState(req)
	if err != nil {
		return nil, toStatus(err)
	}
	rt, err := h.agent.EnsureState(id, target)
	if err != nil {
		return nil, toStatus(err)
	}
	return &sledagentv1.EnsureStateResponse{Runtime: wire.RuntimeProto(rt)}, nil
}

func (h *SledAgent) EnsureUnregistered(_ context.Context, req *sledagentv1.EnsureUnregisteredRequest) (*sledagentv1.EnsureUnregisteredResponse, error) {
	id, err := wire.ParseVMMID(req.GetVmmId())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &sledagentv1.EnsureUnregisteredResponse{}
	if rt := h.agent.EnsureUnregistered(id); rt != nil {
		resp.UpdatedRuntime = wire.RuntimeProto(*rt)
	}
	return resp, nil
}

func (h *SledAgent) GetVmmState(_ context.Context, req *sledagentv1.GetVmmStateRequest) (*sledagentv1.GetVmmStateResponse, error) {
	id, err := wire.ParseVMMID(req.GetVmmId())
	if err != nil {
		return nil, toStatus(err)
	}
	v, err := h.agent.VMM(id)
	if err != nil {
		return nil, toStatus(err)
	}
	return &sledagentv1.GetVmmStateResponse{
		InstanceId:   v.Instance.String(),
		Runtime:      wire.RuntimeProto(v.Runtime),
		MigrationIn:  wire.MigrationProto(v.MigrationIn),
		MigrationOut: wire.MigrationProto(v.MigrationOut),
	}, nil
}

func vmmInventoryProto(views []vmm.View) []*sledagentv1.VmmInventory {
	out := make([]*sledagentv1.VmmInventory, 0, len(views))
	for _, v := range views {
		out = append(out, &sledagentv1.VmmInventory{
			VmmId:      v.VMM.String(),
			InstanceId: v.Instance.String(),
			Runtime:    wire.RuntimeProto(v.Runtime),
		})
	}
	return out
}
