package api

import (
	"context"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/sledagent/app"
	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/sim"
)

// SledAgentSim serves sledagentv1.SledAgentSim over the simulated backends.
type SledAgentSim struct {
	sledagentv1.UnimplementedSledAgentSimServer
	agent *app.Agent
	zones *sim.Runtime
}

// NewSledAgentSim returns the fault-injection handlers.
func NewSledAgentSim(agent *app.Agent, zones *sim.Runtime) *SledAgentSim {
	return &SledAgentSim{agent: agent, zones: zones}
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
		return sim.AnyZone
	}
	parsed, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		v.Add("zone_id", "%q is not a UUID", id)
	}
	return parsed
}

func attempts(v *apierror.Violations, count uint32) {
	if count == 0 {
		v.Add("count", "must be at least 1")
	}
}
