package api

import (
	"context"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/sledagent/app"
	hypervisorsim "github.com/rackplane/rackplane/services/sledagent/hypervisor/sim"
	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/wire"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/faults"
)

// SledAgentSim serves sledagentv1.SledAgentSim over the simulated backends.
type SledAgentSim struct {
	sledagentv1.UnimplementedSledAgentSimServer
	agent      *app.Agent
	zones      *faults.Runtime
	hypervisor *hypervisorsim.Hypervisor
	rpcFaults  *RPCFaults
}

// NewSledAgentSim returns the fault-injection handlers.
func NewSledAgentSim(agent *app.Agent, zones *faults.Runtime, hypervisor *hypervisorsim.Hypervisor, rpcFaults *RPCFaults) *SledAgentSim {
	return &SledAgentSim{agent: agent, zones: zones, hypervisor: hypervisor, rpcFaults: rpcFaults}
}

func (h *SledAgentSim) FailZoneStart(_ context.Context, req *sledagentv1.FailZoneStartRequest) (*sledagentv1.FailZoneStartResponse, error) {
	var v apierror.Violations
	zone := zoneTarget(&v, req.GetZoneId())
	attempts(&v, req.GetCount())
	if err := v.Err(); err != nil {
		return nil, toStatus(err)
	}
	h.zones.FailStarts(zone, int(req.GetCount()), req.GetMessage())
	return &sledagentv1.FailZoneStartResponse{}, nil
}

func (h *SledAgentSim) FailZoneShutdown(_ context.Context, req *sledagentv1.FailZoneShutdownRequest) (*sledagentv1.FailZoneShutdownResponse, error) {
	var v apierror.Violations
	zone := zoneTarget(&v, req.GetZoneId())
	attempts(&v, req.GetCount())
	step := reconciler.StepHaltAndRemove
	if req.GetStep() != sledagentv1.ShutdownStep_SHUTDOWN_STEP_UNSPECIFIED {
		step = 0
		for s, p := range shutdownStepProto {
			if p == req.GetStep() {
				step = s
			}
		}
		if step == 0 {
			v.Add("step", "unknown shutdown step %d", req.GetStep())
		}
	}
	if err := v.Err(); err != nil {
		return nil, toStatus(err)
	}
	h.zones.FailShutdownStep(zone, step, int(req.GetCount()), req.GetMessage())
	return &sledagentv1.FailZoneShutdownResponse{}, nil
}

func (h *SledAgentSim) HangZoneShutdown(_ context.Context, req *sledagentv1.HangZoneShutdownRequest) (*sledagentv1.HangZoneShutdownResponse, error) {
	var v apierror.Violations
	zone := zoneTarget(&v, req.GetZoneId())
	if err := v.Err(); err != nil {
		return nil, toStatus(err)
	}
	h.zones.HangHalt(zone)
	return &sledagentv1.HangZoneShutdownResponse{}, nil
}

func (h *SledAgentSim) ReleaseZoneShutdown(_ context.Context, req *sledagentv1.ReleaseZoneShutdownRequest) (*sledagentv1.ReleaseZoneShutdownResponse, error) {
	var v apierror.Violations
	zone := zoneTarget(&v, req.GetZoneId())
	if err := v.Err(); err != nil {
		return nil, toStatus(err)
	}
	h.zones.ReleaseHalt(zone)
	return &sledagentv1.ReleaseZoneShutdownResponse{}, nil
}

func (h *SledAgentSim) SetZoneLatency(_ context.Context, req *sledagentv1.SetZoneLatencyRequest) (*sledagentv1.SetZoneLatencyResponse, error) {
	var v apierror.Violations
	start, step := req.GetStart().AsDuration(), req.GetShutdownStep().AsDuration()
	if start < 0 {
		v.Add("start", "must not be negative")
	}
	if step < 0 {
		v.Add("shutdown_step", "must not be negative")
	}
	if err := v.Err(); err != nil {
		return nil, toStatus(err)
	}
	h.zones.SetLatency(start, step)
	return &sledagentv1.SetZoneLatencyResponse{}, nil
}

func (h *SledAgentSim) ClearZoneFaults(context.Context, *sledagentv1.ClearZoneFaultsRequest) (*sledagentv1.ClearZoneFaultsResponse, error) {
	h.zones.ClearFaults()
	return &sledagentv1.ClearZoneFaultsResponse{}, nil
}

func (h *SledAgentSim) PokeReconciler(context.Context, *sledagentv1.PokeReconcilerRequest) (*sledagentv1.PokeReconcilerResponse, error) {
	h.agent.PokeReconciler()
	return &sledagentv1.PokeReconcilerResponse{}, nil
}

// zoneTarget parses a fault's zone id; empty means every zone.
func zoneTarget(v *apierror.Violations, id string) uuid.UUID {
	if id == "" {
		return faults.AnyZone
	}
	return v.UUID("zone_id", id)
}

// vmmTarget parses a fault's VMM id; empty means every VMM.
func vmmTarget(v *apierror.Violations, id string) uuid.UUID {
	if id == "" {
		return hypervisorsim.AnyVMM
	}
	return v.UUID("vmm_id", id)
}

func (h *SledAgentSim) SetHypervisorMode(_ context.Context, req *sledagentv1.SetHypervisorModeRequest) (*sledagentv1.SetHypervisorModeResponse, error) {
	var v apierror.Violations
	var mode hypervisorsim.Mode
	switch req.GetMode() {
	case sledagentv1.HypervisorMode_HYPERVISOR_MODE_AUTO:
		mode = hypervisorsim.ModeAuto
	case sledagentv1.HypervisorMode_HYPERVISOR_MODE_EXPLICIT:
		mode = hypervisorsim.ModeExplicit
	default:
		v.Add("mode", "must be AUTO or EXPLICIT, got %s", req.GetMode())
	}
	if req.GetTransitionDelay().AsDuration() < 0 {
		v.Add("transition_delay", "must not be negative")
	}
	if err := v.Err(); err != nil {
		return nil, toStatus(err)
	}
	h.hypervisor.SetMode(mode, req.GetTransitionDelay().AsDuration())
	return &sledagentv1.SetHypervisorModeResponse{}, nil
}

func (h *SledAgentSim) StepVmms(_ context.Context, req *sledagentv1.StepVmmsRequest) (*sledagentv1.StepVmmsResponse, error) {
	var v apierror.Violations
	id := vmmTarget(&v, req.GetVmmId())
	if err := v.Err(); err != nil {
		return nil, toStatus(err)
	}
	n := h.hypervisor.Step(id, req.GetDrain())
	return &sledagentv1.StepVmmsResponse{Transitions: uint32(n)}, nil
}

func (h *SledAgentSim) HangVmmStop(_ context.Context, req *sledagentv1.HangVmmStopRequest) (*sledagentv1.HangVmmStopResponse, error) {
	var v apierror.Violations
	id := vmmTarget(&v, req.GetVmmId())
	if err := v.Err(); err != nil {
		return nil, toStatus(err)
	}
	h.hypervisor.HangStop(id)
	return &sledagentv1.HangVmmStopResponse{}, nil
}

func (h *SledAgentSim) FailEnsureState(_ context.Context, req *sledagentv1.FailEnsureStateRequest) (*sledagentv1.FailEnsureStateResponse, error) {
	var v apierror.Violations
	id := vmmTarget(&v, req.GetVmmId())
	attempts(&v, req.GetCount())
	code := codes.Internal
	if req.GetCode() != 0 {
		code = codes.Code(req.GetCode())
		if code == codes.NotFound || code > codes.Unauthenticated {
			v.Add("code", "%d is not a gRPC error code other than OK and NOT_FOUND (use ForgetVmm for a VMM that is gone)", req.GetCode())
		}
	}
	if err := v.Err(); err != nil {
		return nil, toStatus(err)
	}
	h.hypervisor.FailRequests(id, int(req.GetCount()), code, req.GetMessage())
	return &sledagentv1.FailEnsureStateResponse{}, nil
}

func (h *SledAgentSim) ForgetVmm(_ context.Context, req *sledagentv1.ForgetVmmRequest) (*sledagentv1.ForgetVmmResponse, error) {
	id, err := wire.ParseVMMID(req.GetVmmId())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := h.agent.ForgetVMM(id); err != nil {
		return nil, toStatus(err)
	}
	return &sledagentv1.ForgetVmmResponse{}, nil
}

func (h *SledAgentSim) SetBlackHole(_ context.Context, req *sledagentv1.SetBlackHoleRequest) (*sledagentv1.SetBlackHoleResponse, error) {
	h.rpcFaults.SetBlackHole(req.GetEnabled())
	return &sledagentv1.SetBlackHoleResponse{}, nil
}

func (h *SledAgentSim) SetRpcLatency(_ context.Context, req *sledagentv1.SetRpcLatencyRequest) (*sledagentv1.SetRpcLatencyResponse, error) {
	if req.GetLatency().AsDuration() < 0 {
		var v apierror.Violations
		v.Add("latency", "must not be negative")
		return nil, toStatus(v.Err())
	}
	h.rpcFaults.SetLatency(req.GetLatency().AsDuration())
	return &sledagentv1.SetRpcLatencyResponse{}, nil
}

func (h *SledAgentSim) ClearVmmFaults(context.Context, *sledagentv1.ClearVmmFaultsRequest) (*sledagentv1.ClearVmmFaultsResponse, error) {
	h.hypervisor.ClearFaults()
	h.rpcFaults.Clear()
	return &sledagentv1.ClearVmmFaultsResponse{}, nil
}

func attempts(v *apierror.Violations, count uint32) {
	if count == 0 {
		v.Add("count", "must be at least 1")
	}
}

func (h *SledAgentSim) GetRpcFaults(context.Context, *sledagentv1.GetRpcFaultsRequest) (*sledagentv1.GetRpcFaultsResponse, error) {
	s := h.rpcFaults.State()
	resp := &sledagentv1.GetRpcFaultsResponse{BlackHole: s.BlackHole, Latency: durationpb.New(s.Latency),
		HeldCalls: make([]*sledagentv1.HeldCall, 0, len(s.Held))}
	for _, c := range s.Held {
		resp.HeldCalls = append(resp.HeldCalls, &sledagentv1.HeldCall{Method: c.Method, VmmId: c.VMMID})
	}
	return resp, nil
}
