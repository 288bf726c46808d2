package app

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/sledclient"
)

// VMMStateUpdate applies a sled-agent's report of a VMM's runtime, and of
// the migration sides it carries, each through its generation guard (V5,
// N3). It reports whether the VMM row changed; an update whose generation
// is not newer changes nothing and is not an error, so the sled-agent does
// not retry it. A VMM nexus does not know is ErrNotFound, which the
// sled-agent treats as permanent.
func (n *Nexus) VMMStateUpdate(ctx context.Context, req *nexusv1.VmmStateUpdateRequest) (bool, error) {
	var v apierror.Violations
	id := v.UUID("vmm_id", req.GetVmmId())
	rt := req.GetRuntime()
	if rt == nil {
		v.Add("runtime", "is required")
	} else if _, err := sledclient.Runtime(rt); err != nil {
		if rt.GetGeneration() == 0 {
			v.Add("runtime.generation", "must be at least 1")
		}
		if rt.GetState() == 0 || rt.GetState() > sledagentv1.VmmState_VMM_STATE_DESTROYED {
			v.Add("runtime.state", "unknown VMM state %s", rt.GetState())
		}
	}
	// migration_in is this VMM's side as a migration target, migration_out
	// as a source.
	var migrations []sledclient.MigrationSide
	for _, m := range []struct {
		field string
		side  datastore.MigrationSide
		rt    *sledagentv1.MigrationRuntime
	}{{"migration_in", datastore.MigrationTarget, req.GetMigrationIn()}, {"migration_out", datastore.MigrationSource, req.GetMigrationOut()}} {
		if m.rt == nil {
			continue
		}
		parsed, err := sledclient.Migration(m.rt, m.side)
		if err != nil {
			v.Add(m.field, "%v", err)
			continue
		}
		migrations = append(migrations, parsed)
	}
	if err := v.Err(); err != nil {
		return false, err
	}
	runtime, _ := sledclient.Runtime(rt)
	wrote, err := n.ds.VMMUpdateRuntime(ctx, id, runtime)
	if err != nil {
		return false, err
	}
	settle := wrote && runtime.State.Terminal()
	for _, m := range migrations {
		moved, err := n.ds.MigrationUpdateSide(ctx, m.ID, m.Side, m.State, m.Generation, time.Now())
		if errors.Is(err, datastore.ErrNotFound) {
			continue // a migration whose saga never recorded it: nothing to resolve
		}
		if err != nil {
			return wrote, err
		}
		settle = settle || (moved && m.State.Terminal())
	}
	if settle {
		// Only a row that really changed and became terminal starts an
		// update saga (N6); stale and repeated updates start nothing.
		vmm, err := n.ds.VMMGet(ctx, id)
		if err == nil {
			n.log.Info("VMM or migration became terminal; updating its instance", zap.Stringer("vmm_id", id),
				zap.String("state", string(runtime.State)), zap.Uint64("generation", runtime.Generation))
			n.UpdateInstanceInBackground(vmm.InstanceID)
		}
	}
	return wrote, nil
}

// VMM returns a VMM record.
func (n *Nexus) VMM(ctx context.Context, id string) (datastore.VMM, error) {
	var v apierror.Violations
	parsed := v.UUID("vmm_id", id)
	if err := v.Err(); err != nil {
		return datastore.VMM{}, err
	}
	return n.ds.VMMGet(ctx, parsed)
}
