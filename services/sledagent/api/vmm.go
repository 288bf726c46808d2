package api

import (
	"context"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/sledagent/nexusclient"
	"github.com/rackplane/rackplane/services/sledagent/vmm"
)

func (h *SledAgent) EnsureRegistered(_ context.Context, req *sledagentv1.EnsureRegisteredRequest) (*sledagentv1.EnsureRegisteredResponse, error) {
	rt, err := h.agent.EnsureRegistered(req)
	if err != nil {
		return nil, toStatus(err)
	}
	return &sledagentv1.EnsureRegisteredResponse{Runtime: nexusclient.RuntimeProto(rt)}, nil
}

func (h *SledAgent) EnsureState(_ context.Context, req *sledagentv1.EnsureStateRequest) (*sledagentv1.EnsureStateResponse, error) {
	rt, err := h.agent.EnsureState(req)
	if err != nil {
		return nil, toStatus(err)
	}
	return &sledagentv1.EnsureStateResponse{Runtime: nexusclient.RuntimeProto(rt)}, nil
}

func (h *SledAgent) EnsureUnregistered(_ context.Context, req *sledagentv1.EnsureUnregisteredRequest) (*sledagentv1.EnsureUnregisteredResponse, error) {
	rt, err := h.agent.EnsureUnregistered(req.GetVmmId())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &sledagentv1.EnsureUnregisteredResponse{}
	if rt != nil {
		resp.UpdatedRuntime = nexusclient.RuntimeProto(*rt)
	}
	return resp, nil
}

func (h *SledAgent) GetVmmState(_ context.Context, req *sledagentv1.GetVmmStateRequest) (*sledagentv1.GetVmmStateResponse, error) {
	v, err := h.agent.VMM(req.GetVmmId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &sledagentv1.GetVmmStateResponse{
		InstanceId:   v.Instance.String(),
		Runtime:      nexusclient.RuntimeProto(v.Runtime),
		MigrationIn:  nexusclient.MigrationProto(v.MigrationIn),
		MigrationOut: nexusclient.MigrationProto(v.MigrationOut),
	}, nil
}

func vmmInventoryProto(views []vmm.View) []*sledagentv1.VmmInventory {
	out := make([]*sledagentv1.VmmInventory, 0, len(views))
	for _, v := range views {
		out = append(out, &sledagentv1.VmmInventory{
			VmmId:      v.VMM.String(),
			InstanceId: v.Instance.String(),
			Runtime:    nexusclient.RuntimeProto(v.Runtime),
		})
	}
	return out
}
