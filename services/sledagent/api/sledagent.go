package api

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/sledagent/app"
	"github.com/rackplane/rackplane/services/sledagent/reconciler"
)

// SledAgent serves sledagentv1.SledAgent.
type SledAgent struct {
	sledagentv1.UnimplementedSledAgentServer
	agent *app.Agent
}

// NewSledAgent returns the handlers over agent.
func NewSledAgent(agent *app.Agent) *SledAgent { return &SledAgent{agent: agent} }

func (h *SledAgent) EnsureZones(ctx context.Context, req *sledagentv1.EnsureZonesRequest) (*sledagentv1.EnsureZonesResponse, error) {
	cfg, err := h.agent.EnsureZones(ctx, req.GetConfig())
	if err != nil {
		return nil, toStatus(err)
	}
	return &sledagentv1.EnsureZonesResponse{LedgeredGeneration: cfg.Generation}, nil
}

func (h *SledAgent) GetInventory(context.Context, *sledagentv1.GetInventoryRequest) (*sledagentv1.GetInventoryResponse, error) {
	return inventoryProto(h.agent.Inventory()), nil
}

func inventoryProto(inv app.Inventory) *sledagentv1.GetInventoryResponse {
	out := &sledagentv1.GetInventoryResponse{
		SledId: inv.Sled.ID.String(),
		Resources: &sledagentv1.SledResources{
			Ncpus:       inv.Sled.NCPUs,
			MemoryBytes: inv.Sled.MemoryBytes,
			Zpools:      inv.Sled.Zpools,
		},
		ReconcilerStatus: reconcilerStatusProto(inv.ReconcilerState),
		Vmms:             vmmInventoryProto(inv.VMMs),
	}
	if inv.LedgeredConfig != nil {
		out.LedgeredConfig = inv.LedgeredConfig.Proto()
	}
	for _, c := range inv.LedgerCopies {
		lc := &sledagentv1.LedgerCopy{Path: c.Path, Generation: c.Generation, Problem: c.Problem,
			WritingGeneration: c.Writing}
		if c.Writing != 0 {
			lc.WritingSince = timestamppb.New(c.WritingSince)
		}
		out.LedgerCopies = append(out.LedgerCopies, lc)
	}
	if last := inv.LastPass; last != nil {
		lr := &sledagentv1.LastReconciliation{
			Generation:  last.Generation,
			CompletedAt: timestamppb.New(last.CompletedAt),
		}
		for _, z := range last.Zones {
			zr := &sledagentv1.ZoneReconciliation{ZoneId: z.Zone.ID.String(), Kind: z.Zone.Kind.Proto()}
			if z.Err == "" {
				zr.Result = &sledagentv1.ZoneReconciliation_Ok{Ok: &sledagentv1.ZoneOk{}}
			} else {
				zr.Result = &sledagentv1.ZoneReconciliation_Error{Error: &sledagentv1.ZoneError{
					Message:      z.Err,
					State:        zoneStateProto[z.State],
					ShutdownStep: shutdownStepProto[z.Step],
					Attempts:     uint32(z.Attempts),
				}}
			}
			lr.Zones = append(lr.Zones, zr)
		}
		out.LastReconciliation = lr
	}
	return out
}

func reconcilerStatusProto(s reconciler.Status) *sledagentv1.ReconcilerStatus {
	switch s.Phase {
	case reconciler.PhaseRunning:
		return &sledagentv1.ReconcilerStatus{Status: &sledagentv1.ReconcilerStatus_Running_{
			Running: &sledagentv1.ReconcilerStatus_Running{
				Generation: s.Generation,
				StartedAt:  timestamppb.New(s.StartedAt),
			}}}
	case reconciler.PhaseIdle:
		return &sledagentv1.ReconcilerStatus{Status: &sledagentv1.ReconcilerStatus_Idle_{
			Idle: &sledagentv1.ReconcilerStatus_Idle{
				CompletedAt: timestamppb.New(s.CompletedAt),
				Duration:    durationpb.New(s.Duration.Round(time.Microsecond)),
			}}}
	}
	return &sledagentv1.ReconcilerStatus{Status: &sledagentv1.ReconcilerStatus_NotYetRun_{
		NotYetRun: &sledagentv1.ReconcilerStatus_NotYetRun{}}}
}

var zoneStateProto = map[reconciler.ZoneState]sledagentv1.ZoneState{
	reconciler.ZoneRunning:           sledagentv1.ZoneState_ZONE_STATE_RUNNING,
	reconciler.ZonePartiallyShutDown: sledagentv1.ZoneState_ZONE_STATE_PARTIALLY_SHUT_DOWN,
	reconciler.ZoneFailedToStart:     sledagentv1.ZoneState_ZONE_STATE_FAILED_TO_START,
	reconciler.ZoneExited:            sledagentv1.ZoneState_ZONE_STATE_EXITED,
}

var shutdownStepProto = map[reconciler.ShutdownStep]sledagentv1.ShutdownStep{
	reconciler.StepUntrackMetrics: sledagentv1.ShutdownStep_SHUTDOWN_STEP_UNTRACK_METRICS,
	reconciler.StepHaltAndRemove:  sledagentv1.ShutdownStep_SHUTDOWN_STEP_HALT_AND_REMOVE,
	reconciler.StepCleanUp:        sledagentv1.ShutdownStep_SHUTDOWN_STEP_CLEAN_UP,
}
