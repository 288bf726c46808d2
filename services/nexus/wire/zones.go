package wire

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// ReplicaHealthService is the gRPC health service name under which nexus
// replica id reports itself serving on its internal API. Asking for it
// tells that replica from anything else at the same address: another
// process answers NOT_FOUND.
func ReplicaHealthService(id uuid.UUID) string { return "rackplane.nexus.replica/" + id.String() }

// Inventory converts what a sled-agent says of itself (GetInventory) into
// what nexus keeps of it (Z9), as of collected.
func Inventory(resp *sledagentv1.GetInventoryResponse, collected time.Time) (model.SledInventory, error) {
	sled, err := uuid.Parse(resp.GetSledId())
	if err != nil {
		return model.SledInventory{}, fmt.Errorf("%w: sled id %q", ErrInvalid, resp.GetSledId())
	}
	inv := model.SledInventory{SledID: sled, TimeCollected: collected, Reconciler: model.ReconcilerNotYetRun,
		Zpools: resp.GetResources().GetZpools()}
	if cfg := resp.GetLedgeredConfig(); cfg != nil {
		inv.LedgeredGeneration = cfg.GetGeneration()
	}
	switch {
	case resp.GetReconcilerStatus().GetRunning() != nil:
		inv.Reconciler = model.ReconcilerRunning
	case resp.GetReconcilerStatus().GetIdle() != nil:
		inv.Reconciler = model.ReconcilerIdle
	}
	if last := resp.GetLastReconciliation(); last != nil {
		inv.ReconciledGeneration = last.GetGeneration()
		for _, z := range last.GetZones() {
			id, err := uuid.Parse(z.GetZoneId())
			if err != nil {
				return inv, fmt.Errorf("%w: zone id %q", ErrInvalid, z.GetZoneId())
			}
			zone := model.InventoryZone{ID: id, Kind: zoneKindName(z.GetKind())}
			if e := z.GetError(); e != nil {
				zone.Error, zone.Attempts = e.GetMessage(), e.GetAttempts()
				zone.State = strings.ToLower(strings.TrimPrefix(e.GetState().String(), "ZONE_STATE_"))
			}
			inv.Zones = append(inv.Zones, zone)
		}
	}
	for _, v := range resp.GetVmms() {
		id, errID := uuid.Parse(v.GetVmmId())
		instance, errInstance := uuid.Parse(v.GetInstanceId())
		rt, errRuntime := Runtime(v.GetRuntime())
		if err := errors.Join(errID, errInstance, errRuntime); err != nil {
			return inv, fmt.Errorf("%w: VMM %q: %v", ErrInvalid, v.GetVmmId(), err)
		}
		inv.VMMs = append(inv.VMMs, model.InventoryVMM{ID: id, InstanceID: instance, State: rt.State, Generation: rt.Generation,
			TimeUpdated: rt.TimeUpdated, FailureReason: rt.FailureReason})
	}
	return inv, nil
}

// zoneKindName is the wire enum's kind in the model's spelling ("nexus").
func zoneKindName(k sledagentv1.ZoneKind) model.ZoneKind {
	return model.ZoneKind(strings.ToLower(strings.TrimPrefix(k.String(), "ZONE_KIND_")))
}
