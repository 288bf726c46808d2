package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// ReapOrphanVMMs unregisters every VMM a sled runs that nexus does not
// know (N12): its record is missing, or ended (destroyed, failed,
// saga_unwound). An ended record is final, and no saga registers a VMM
// before its record exists, so such a VMM is no saga's work in progress:
// it is what an action that failed after its side effect, or a lost
// response, left behind. The inventories say which VMMs each sled runs;
// before unregistering one, its sled is asked again, after its record was
// read, so a VMM that ended on its own meanwhile is not counted.
func (n *Nexus) ReapOrphanVMMs(ctx context.Context) (vmmsChecked int, err error) {
	inventories, err := n.ds.InventoryList(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, inv := range inventories {
		for _, v := range inv.VMMs {
			vmmsChecked++
			if err := n.reapIfOrphan(ctx, inv.SledID, v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return vmmsChecked, errors.Join(errs...)
}

func (n *Nexus) reapIfOrphan(ctx context.Context, sled uuid.UUID, v model.InventoryVMM) error {
	why := ""
	rec, err := n.ds.VMMGet(ctx, v.ID)
	switch {
	case errors.Is(err, model.ErrNotFound):
		why = "nexus has no record of it"
	case err != nil:
		return err
	case rec.Runtime.State.Terminal():
		why = fmt.Sprintf("its record is %s", rec.Runtime.State)
	case rec.SledID != sled:
		why = fmt.Sprintf("its record places it on sled %s", rec.SledID)
	default:
		return nil
	}
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	now, err := n.sleds.VMMState(callCtx, sled, v.ID)
	if errors.Is(err, model.ErrVMMGone) || (err == nil && now.State.Terminal()) {
		return nil // gone, or ending, on its own since the inventory
	}
	if err != nil {
		return err
	}
	if _, err := n.sleds.EnsureUnregistered(callCtx, sled, v.ID); err != nil {
		return fmt.Errorf("unregistering orphan VMM %s on sled %s: %w", v.ID, sled, err)
	}
	n.log.Warn("unregistered a VMM nexus does not know (N12)", zap.Stringer("vmm_id", v.ID),
		zap.Stringer("instance_id", v.InstanceID), zap.Stringer("sled_id", sled), zap.String("why", why))
	n.events(EventOrphanVMMReaped, 1)
	return nil
}
