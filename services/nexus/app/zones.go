package app

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// Nexus owns each sled's zones config (Z9): it pushes it, collects what
// each sled says it runs, and calls an expunged zone gone only when that
// says so.

// zonesRefreshPasses is how many zones push passes it takes at most for
// every sled to be pushed its config again although nothing says it lacks
// it: each pass refreshes that share of the sleds, longest-pushed first.
const zonesRefreshPasses = 10

// PushZones gives each sled that may not hold the zones config nexus has
// for it that config (Z9: on change, on a failed push, on an inventory
// that shows an older ledger), and a share of the others, so that every
// sled is pushed again within zonesRefreshPasses passes (the sled takes
// the same generation again, idempotently). It records how each push
// went; a sled that cannot be reached is retried next time. Sleds are
// pushed to a few at a time (eachSled).
func (n *Nexus) PushZones(ctx context.Context) (sledsPushed int, err error) {
	cfgs, err := n.ds.SledZonesToPush(ctx, zonesRefreshPasses)
	if err != nil {
		return 0, err
	}
	return len(cfgs), eachSled(ctx, cfgs, func(cfg model.SledZones) error { return n.pushZonesConfig(ctx, cfg) })
}

// pushZones pushes a sled the zones config nexus holds for it now.
func (n *Nexus) pushZones(ctx context.Context, sled uuid.UUID) error {
	cfg, err := n.ds.SledZonesGet(ctx, sled)
	if err != nil {
		return err
	}
	return n.pushZonesConfig(ctx, cfg)
}

func (n *Nexus) pushZonesConfig(ctx context.Context, cfg model.SledZones) error {
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	pushErr := n.sleds.EnsureZones(callCtx, cfg.SledID, cfg)
	cancel()
	if err := n.ds.SledZonesPushed(ctx, cfg.SledID, cfg.Generation, pushErr, time.Now()); err != nil {
		return err
	}
	if pushErr != nil {
		return fmt.Errorf("pushing zones config generation %d to sled %s: %w", cfg.Generation, cfg.SledID, pushErr)
	}
	return nil
}

// CollectInventory asks every registered sled what it runs and keeps each
// answer (Z9). An expunged zone its sled's answer proves gone is confirmed
// so; this replica then takes over the sagas of any replica that was that
// zone (X4). A sled that does not answer proves nothing. Sleds are asked
// a few at a time (eachSled).
func (n *Nexus) CollectInventory(ctx context.Context) (sledsAsked int, err error) {
	sleds, err := n.ds.SledList(ctx)
	if err != nil {
		return 0, err
	}
	ids := make([]uuid.UUID, len(sleds))
	for i, s := range sleds {
		ids[i] = s.ID
	}
	return len(ids), n.collectInventory(ctx, ids)
}

// ConfirmExpunged is CollectInventory of only the sleds with an expunged
// zone not yet confirmed gone: it runs often, so that a replica's sagas
// move soon after its zone is gone, and costs one query when nothing
// waits.
func (n *Nexus) ConfirmExpunged(ctx context.Context) (sledsAsked int, err error) {
	sleds, err := n.ds.SledsAwaitingConfirmation(ctx)
	if err != nil || len(sleds) == 0 {
		return 0, err
	}
	return len(sleds), n.collectInventory(ctx, sleds)
}

func (n *Nexus) collectInventory(ctx context.Context, sleds []uuid.UUID) error {
	var confirmed atomic.Bool
	err := eachSled(ctx, sleds, func(sled uuid.UUID) error {
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		inv, err := n.sleds.Inventory(callCtx, sled)
		cancel()
		if err != nil {
			return fmt.Errorf("inventory of sled %s: %w", sled, err)
		}
		gone, err := n.ds.InventoryRecord(ctx, inv)
		if err != nil {
			return err
		}
		for _, z := range gone {
			n.log.Info("an expunged zone is confirmed gone: its sled reconciled the generation that expunged it, and it is absent",
				zap.Stringer("zone_id", z), zap.Stringer("sled_id", sled), zap.Uint64("reconciled_generation", inv.ReconciledGeneration))
			confirmed.Store(true)
		}
		return nil
	})
	if confirmed.Load() {
		_, reassignErr := n.ReassignSagas(ctx)
		err = errors.Join(err, reassignErr)
	}
	return err
}

// ReassignSagas takes over the unfinished sagas of every expunged replica
// whose zone is confirmed gone, and resumes them here (X4, X5): each then
// finishes or unwinds as after this replica's own restart, and the updater
// locks they hold go with them. A replica not yet confirmed gone keeps its
// sagas, however long that takes.
func (n *Nexus) ReassignSagas(ctx context.Context) (sagasMoved int, err error) {
	if n.sagas == nil || n.IsExpunged() {
		return 0, nil
	}
	from, err := n.ds.ReplicasToRelieve(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, gone := range from {
		moved, err := n.ds.SagasReassign(ctx, gone, n.replica.id, time.Now())
		if err != nil {
			errs = append(errs, fmt.Errorf("taking the sagas of expunged nexus %s: %w", gone, err))
			continue
		}
		if len(moved) == 0 {
			continue
		}
		n.log.Warn("took over the unfinished sagas of an expunged nexus confirmed gone; resuming them",
			zap.Stringer("from_nexus_id", gone), zap.Int("sagas", len(moved)))
		n.events(EventSagasReassigned, len(moved))
		sagasMoved += len(moved)
		if _, err := n.sagas.Adopt(ctx, moved); err != nil {
			errs = append(errs, err)
		}
	}
	return sagasMoved, errors.Join(errs...)
}

// ZonesView is a sled's zones as an operator sees them.
type ZonesView = datastore.SledZonesStatus

// SledZones lists the zones nexus has put on a sled, expunged ones too,
// with what the sled's last inventory says of each. Fleet admins only.
func (n *Nexus) SledZones(ctx context.Context, sledID string) (ZonesView, error) {
	if err := authz.RequireFleetAdmin(ctx, "list a sled's zones"); err != nil {
		return ZonesView{}, err
	}
	var v apierror.Violations
	sled := v.UUID("sled_id", sledID)
	if err := v.Err(); err != nil {
		return ZonesView{}, err
	}
	return n.ds.SledZonesStatusGet(ctx, sled)
}

// ZoneExpunge takes a zone out of its sled's config for good (one database
// write; for a nexus zone, its replica can claim nothing from that commit
// on, X3), then pushes the sled its new config. A push that fails is
// retried by the zones push task; the zone's record says where it stands.
// Fleet admins only.
func (n *Nexus) ZoneExpunge(ctx context.Context, sledID, zoneID string) (model.ZoneRecord, error) {
	if err := authz.RequireFleetAdmin(ctx, "expunge a zone"); err != nil {
		return model.ZoneRecord{}, err
	}
	var v apierror.Violations
	sled, zone := v.UUID("sled_id", sledID), v.UUID("zone_id", zoneID)
	if err := v.Err(); err != nil {
		return model.ZoneRecord{}, err
	}
	rec, changed, err := n.ds.ZoneExpunge(ctx, sled, zone, time.Now())
	if err != nil || !changed {
		return rec, err
	}
	n.log.Warn("zone expunged", zap.Stringer("zone_id", zone), zap.Stringer("sled_id", sled),
		zap.String("kind", string(rec.Kind)), zap.Uint64("generation", rec.ExpungedGeneration),
		zap.String("actor", authz.FromContext(ctx).Principal))
	if err := n.pushZones(ctx, sled); err != nil {
		n.log.Warn("the expunge is recorded; its push failed and will be retried", zap.Error(err))
	}
	return rec, nil
}

// ReplicaView is a nexus replica as an operator sees it: its record, what
// it holds, and for an expunged one not yet confirmed gone, what that
// waits for.
type ReplicaView struct {
	model.NexusZone
	Claims     model.ReplicaClaims
	WaitingFor string
}

// Replicas lists the nexus replicas, with what each holds. Fleet admins
// only.
func (n *Nexus) Replicas(ctx context.Context) ([]ReplicaView, error) {
	if err := authz.RequireFleetAdmin(ctx, "list nexus replicas"); err != nil {
		return nil, err
	}
	replicas, err := n.ds.NexusZoneList(ctx)
	if err != nil {
		return nil, err
	}
	claims, err := n.ds.ReplicaClaimsGet(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ReplicaView, len(replicas))
	for i, r := range replicas {
		out[i] = ReplicaView{NexusZone: r, Claims: claims[r.ID]}
		if r.State != model.NexusExpunged || !r.ZoneConfirmedGone.IsZero() {
			continue
		}
		if r.SledID == uuid.Nil {
			out[i].WaitingFor = "a replica started outside rack setup is no zone: nothing can confirm it gone"
			continue
		}
		st, err := n.ds.SledZonesStatusGet(ctx, r.SledID)
		if err != nil {
			return nil, err
		}
		for _, z := range st.Zones {
			if z.ID == r.ID {
				out[i].WaitingFor = z.WaitingFor(st.Inventory, st.Push)
			}
		}
	}
	return out, nil
}
