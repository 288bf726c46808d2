package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// VMMReport is what a sled-agent publishes about one of its VMMs (V5): its
// runtime, and the migration sides it carries (as target and as source).
type VMMReport struct {
	// Sled is the sled reporting; only a VMM placed on it, and the
	// migration sides that VMM is, may be reported (S3).
	Sled       uuid.UUID
	VMM        uuid.UUID
	Runtime    model.VMMRuntime
	Migrations []model.MigrationReport
}

// VMMStateUpdate applies a sled-agent's report of a VMM's runtime, and of
// the migration sides it carries, each through its generation guard (V5,
// N3). It reports whether the VMM row changed; an update whose generation
// is not newer changes nothing and is not an error, so the sled-agent does
// not retry it. A VMM nexus does not know is model.ErrNotFound, which the
// sled-agent treats as permanent.
func (n *Nexus) VMMStateUpdate(ctx context.Context, r VMMReport) (bool, error) {
	wrote, err := n.ds.VMMReportRuntime(ctx, r.Sled, r.VMM, r.Runtime)
	if err != nil {
		return false, n.refusedReport(r, err)
	}
	settle := wrote && r.Runtime.State.Terminal()
	for _, m := range r.Migrations {
		moved, err := n.ds.MigrationUpdateSide(ctx, r.VMM, m.ID, m.Side, m.State, m.Generation, time.Now())
		if errors.Is(err, model.ErrNotFound) {
			continue // a migration whose saga never recorded it: nothing to resolve
		}
		if err != nil {
			return wrote, n.refusedReport(r, err)
		}
		settle = settle || (moved && m.State.Terminal())
	}
	if settle {
		// Only a row that really changed and became terminal starts an
		// update saga (N6); stale and repeated updates start nothing.
		vmm, err := n.ds.VMMGet(ctx, r.VMM)
		if err == nil {
			n.log.Info("VMM or migration became terminal; updating its instance", zap.Stringer("vmm_id", r.VMM),
				zap.String("state", string(r.Runtime.State)), zap.Uint64("generation", r.Runtime.Generation))
			n.UpdateInstanceInBackground(vmm.InstanceID)
		}
	}
	return wrote, nil
}

// refusedReport logs a report of something that is not the reporter's,
// which no honest sled-agent sends, and refuses it as forbidden.
func (n *Nexus) refusedReport(r VMMReport, err error) error {
	if !errors.Is(err, model.ErrNotPlacedHere) {
		return err
	}
	n.log.Warn("refused a VMM report about what is not the reporting sled's (S3)", zap.Stringer("sled_id", r.Sled),
		zap.Stringer("vmm_id", r.VMM), zap.Error(err))
	n.events(EventForeignReportRefused, 1)
	return fmt.Errorf("%w: %w", authz.ErrForbidden, err)
}
