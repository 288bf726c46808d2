package sledclient

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/wire"
)

// EnsureZones gives a sled the zones config nexus wants it to run (Z9).
// The sled takes it, or the same generation again, unchanged; one older
// than what it ledgers is model.ErrZonesOutdated.
func (p *Pool) EnsureZones(ctx context.Context, sled uuid.UUID, cfg model.SledZones) error {
	_, err := call(ctx, p, sled, func(c sledagentv1.SledAgentClient) (*sledagentv1.EnsureZonesResponse, error) {
		return c.EnsureZones(ctx, &sledagentv1.EnsureZonesRequest{Config: wire.ZonesConfig(cfg)})
	})
	return err
}

// Inventory asks a sled what it runs (GetInventory, Z6), as nexus keeps it
// (Z9).
func (p *Pool) Inventory(ctx context.Context, sled uuid.UUID) (model.SledInventory, error) {
	resp, err := call(ctx, p, sled, func(c sledagentv1.SledAgentClient) (*sledagentv1.GetInventoryResponse, error) {
		return c.GetInventory(ctx, &sledagentv1.GetInventoryRequest{})
	})
	if err != nil {
		return model.SledInventory{}, err
	}
	inv, err := wire.Inventory(resp, time.Now())
	if err == nil && inv.SledID != sled {
		err = fmt.Errorf("sled %s answered as sled %s", sled, inv.SledID)
	}
	return inv, err
}
