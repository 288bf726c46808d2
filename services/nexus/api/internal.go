package api

import (
	"context"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/wire"
)

// Internal serves NexusInternal, the API sled-agents call.
type Internal struct {
	nexusv1.UnimplementedNexusInternalServer
	nexus *app.Nexus
}

// NewInternal returns the internal API handlers.
func NewInternal(n *app.Nexus) *Internal { return &Internal{nexus: n} }

// speaksFor refuses a call about a sled from anyone but that sled's own
// certificate (S3): a sled registers, heartbeats and reports VMMs for
// itself only, so a forged registration or a re-registration at another
// address needs the sled's key.
func speaksFor(ctx context.Context, sled string) error {
	caller, err := grpcconn.Caller(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, "the caller presented no rack certificate")
	}
	if id, err := uuid.Parse(sled); err == nil && caller.Kind == rackpki.Sled && caller.ID == id.String() {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "%s may not speak for sled %q", caller, sled)
}

func (h *Internal) RegisterSled(ctx context.Context, req *nexusv1.RegisterSledRequest) (*nexusv1.RegisterSledResponse, error) {
	if err := speaksFor(ctx, req.GetSledId()); err != nil {
		return nil, err
	}
	if err := h.nexus.SledRegister(ctx, req); err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.RegisterSledResponse{}, nil
}

func (h *Internal) SledHeartbeat(ctx context.Context, req *nexusv1.SledHeartbeatRequest) (*nexusv1.SledHeartbeatResponse, error) {
	if err := speaksFor(ctx, req.GetSledId()); err != nil {
		return nil, err
	}
	if err := h.nexus.SledHeartbeat(ctx, req.GetSledId()); err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.SledHeartbeatResponse{}, nil
}

func (h *Internal) VmmStateUpdate(ctx context.Context, req *nexusv1.VmmStateUpdateRequest) (*nexusv1.VmmStateUpdateResponse, error) {
	if err := speaksFor(ctx, req.GetSledId()); err != nil {
		return nil, err
	}
	report, err := vmmReport(req)
	if err != nil {
		return nil, toStatus(err)
	}
	if _, err := h.nexus.VMMStateUpdate(ctx, report); err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.VmmStateUpdateResponse{}, nil
}

// vmmReport validates a VMM update, every problem named by its field.
func vmmReport(req *nexusv1.VmmStateUpdateRequest) (app.VMMReport, error) {
	var v apierror.Violations
	r := app.VMMReport{Sled: v.UUID("sled_id", req.GetSledId()), VMM: v.UUID("vmm_id", req.GetVmmId())}
	rt := req.GetRuntime()
	if rt == nil {
		v.Add("runtime", "is required")
	} else if parsed, err := wire.Runtime(rt); err != nil {
		if rt.GetGeneration() == 0 {
			v.Add("runtime.generation", "must be at least 1")
		}
		if rt.GetState() == 0 || rt.GetState() > sledagentv1.VmmState_VMM_STATE_DESTROYED {
			v.Add("runtime.state", "unknown VMM state %s", rt.GetState())
		}
	} else {
		r.Runtime = parsed
	}
	// migration_in is this VMM's side as a migration target, migration_out
	// as a source.
	for _, m := range []struct {
		field string
		side  model.MigrationSide
		rt    *sledagentv1.MigrationRuntime
	}{{"migration_in", model.MigrationTarget, req.GetMigrationIn()}, {"migration_out", model.MigrationSource, req.GetMigrationOut()}} {
		if m.rt == nil {
			continue
		}
		parsed, err := wire.Migration(m.rt, m.side)
		if err != nil {
			v.Add(m.field, "%v", err)
			continue
		}
		r.Migrations = append(r.Migrations, parsed)
	}
	return r, v.Err()
}
