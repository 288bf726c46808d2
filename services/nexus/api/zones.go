package api

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"google.golang.org/protobuf/types/known/timestamppb"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// SledZoneList is GET /v1/system/hardware/sleds/{sled_id}/zones (Z9).
func (h *External) SledZoneList(ctx context.Context, req *nexusv1.SledZoneListRequest) (*nexusv1.SledZoneListResponse, error) {
	st, err := h.nexus.SledZones(ctx, req.GetSledId())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &nexusv1.SledZoneListResponse{Items: make([]*nexusv1.SledZone, 0, len(st.Zones)), Generation: st.Generation,
		PushedGeneration: st.Push.Generation, TimePushed: optionalTime(st.Push.Time), PushError: st.Push.Error}
	if inv := st.Inventory; inv != nil {
		resp.TimeInventoryCollected = timestamppb.New(inv.TimeCollected)
		resp.LedgeredGeneration, resp.ReconciledGeneration, resp.Reconciler = inv.LedgeredGeneration, inv.ReconciledGeneration, inv.Reconciler
	}
	for _, z := range st.Zones {
		resp.Items = append(resp.Items, sledZoneProto(z, st))
	}
	return resp, nil
}

// SledZoneExpunge is POST /v1/system/hardware/sleds/{sled_id}/zones/{zone_id}/expunge (Z9, X3).
func (h *External) SledZoneExpunge(ctx context.Context, req *nexusv1.SledZoneExpungeRequest) (*nexusv1.SledZoneExpungeResponse, error) {
	rec, err := h.nexus.ZoneExpunge(ctx, req.GetSledId(), req.GetZoneId())
	if err != nil {
		return nil, toStatus(err)
	}
	st, err := h.nexus.SledZones(ctx, req.GetSledId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.SledZoneExpungeResponse{Zone: sledZoneProto(rec, st)}, nil
}

func sledZoneProto(z model.ZoneRecord, st app.ZonesView) *nexusv1.SledZone {
	out := &nexusv1.SledZone{Id: z.ID.String(), Kind: string(z.Kind), Address: z.Address, Pool: z.Pool,
		Disposition: string(z.Disposition), TimeExpunged: optionalTime(z.TimeExpunged),
		ConfirmedGone: z.ConfirmedGone(), TimeConfirmedGone: optionalTime(z.TimeConfirmedGone),
		Inventory: "unknown", WaitingFor: z.WaitingFor(st.Inventory, st.Push)}
	if z.ExpungedGeneration != 0 {
		out.ExpungedGeneration = &z.ExpungedGeneration
	}
	if st.Inventory != nil {
		out.Inventory = "absent"
		if present, ok := st.Inventory.Zone(z.ID); ok {
			out.Inventory = "running"
			if present.Error != "" {
				out.Inventory, out.InventoryError, out.InventoryState, out.InventoryAttempts = "failing", present.Error, present.State, present.Attempts
			}
		}
	}
	return out
}

// NexusReplicaList is GET /v1/system/nexus-replicas (X6, X7).
func (h *External) NexusReplicaList(ctx context.Context, _ *nexusv1.NexusReplicaListRequest) (*nexusv1.NexusReplicaListResponse, error) {
	replicas, err := h.nexus.Replicas(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &nexusv1.NexusReplicaListResponse{Items: make([]*nexusv1.NexusReplica, 0, len(replicas))}
	for _, r := range replicas {
		item := &nexusv1.NexusReplica{Id: r.ID.String(), InternalAddress: r.InternalAddress, ExternalAddress: r.ExternalAddress,
			State: string(r.State), TimeExpunged: optionalTime(r.TimeExpunged), ZoneConfirmedGone: !r.ZoneConfirmedGone.IsZero(),
			TimeZoneConfirmedGone: optionalTime(r.ZoneConfirmedGone), SagasRunning: uint64(r.Claims.Running),
			SagasUnwinding: uint64(r.Claims.Unwinding), SagasStuck: uint64(r.Claims.Stuck), UpdaterLocks: uint64(r.Claims.UpdaterLocks),
			SagasReassigned: uint64(r.SagasReassigned), TimeReassigned: optionalTime(r.TimeReassigned), WaitingFor: r.WaitingFor}
		if r.SledID != uuid.Nil {
			item.SledId = r.SledID.String()
		}
		if r.ReassignedTo != uuid.Nil {
			item.ReassignedTo = r.ReassignedTo.String()
		}
		resp.Items = append(resp.Items, item)
	}
	return resp, nil
}

// SagaList is GET /v1/system/sagas (X6).
func (h *External) SagaList(ctx context.Context, _ *nexusv1.SagaListRequest) (*nexusv1.SagaListResponse, error) {
	sagas, err := h.nexus.SagaList(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &nexusv1.SagaListResponse{Items: make([]*nexusv1.Saga, 0, len(sagas))}
	for _, s := range sagas {
		var params struct {
			Instance string `json:"instance"`
		}
		_ = json.Unmarshal(s.Params, &params) // a saga without an instance names none
		resp.Items = append(resp.Items, &nexusv1.Saga{Id: s.ID.String(), Template: s.Template, State: string(s.State),
			Owner: s.Owner.String(), OwnerState: ownerState(s.OwnerState), InstanceId: params.Instance,
			TimeCreated: timestamppb.New(s.TimeCreated), TimeStateChanged: timestamppb.New(s.TimeStateChanged)})
	}
	return resp, nil
}

// UpdaterLockList is GET /v1/system/updater-locks (X6).
func (h *External) UpdaterLockList(ctx context.Context, _ *nexusv1.UpdaterLockListRequest) (*nexusv1.UpdaterLockListResponse, error) {
	locks, err := h.nexus.UpdaterLockList(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &nexusv1.UpdaterLockListResponse{Items: make([]*nexusv1.UpdaterLock, 0, len(locks))}
	for _, l := range locks {
		item := &nexusv1.UpdaterLock{InstanceId: l.Instance.String(), InstanceName: l.InstanceName, ProjectId: l.Project.String(),
			OwnerState: ownerState(l.OwnerState)}
		if l.Saga != uuid.Nil {
			item.SagaId, item.Owner, item.TimeSagaCreated = l.Saga.String(), l.Owner.String(), timestamppb.New(l.TimeSagaCreated)
		}
		resp.Items = append(resp.Items, item)
	}
	return resp, nil
}

// ownerState spells a saga owner's state; "unknown" for an owner that is
// no recorded replica.
func ownerState(s model.NexusZoneState) string {
	if s == "" {
		return "unknown"
	}
	return string(s)
}

// optionalTime is t, or nothing for the zero time.
func optionalTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
