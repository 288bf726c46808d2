package api

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/services/nexus/app"
)

// SagaListStuck is GET /v1/system/sagas/stuck, the operator's view of the
// sagas that need them (N5).
func (h *External) SagaListStuck(ctx context.Context, _ *nexusv1.SagaListStuckRequest) (*nexusv1.SagaListStuckResponse, error) {
	items, err := h.nexus.SagaListStuck(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &nexusv1.SagaListStuckResponse{Items: make([]*nexusv1.StuckSaga, 0, len(items))}
	for _, s := range items {
		resp.Items = append(resp.Items, stuckSagaProto(s))
	}
	return resp, nil
}

func stuckSagaProto(s app.StuckSagaView) *nexusv1.StuckSaga {
	out := &nexusv1.StuckSaga{Id: s.ID.String(), Template: s.Template, Owner: s.Owner.String(),
		TimeCreated: timestamppb.New(s.TimeCreated), Params: string(s.Params), OwnerState: ownerState(s.OwnerState)}
	if s.Err != nil {
		out.Node = s.Err.Node
		if s.Err.Err != nil {
			out.Error = s.Err.Err.Error()
		}
	}
	return out
}
