package app

import (
	"context"

	"go.uber.org/zap"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/datastore"
)

var vmmStates = map[sledagentv1.VmmState]datastore.VMMState{
	sledagentv1.VmmState_VMM_STATE_STARTING:  datastore.VMMStarting,
	sledagentv1.VmmState_VMM_STATE_RUNNING:   datastore.VMMRunning,
	sledagentv1.VmmState_VMM_STATE_STOPPING:  datastore.VMMStopping,
	sledagentv1.VmmState_VMM_STATE_STOPPED:   datastore.VMMStopped,
	sledagentv1.VmmState_VMM_STATE_REBOOTING: datastore.VMMRebooting,
	sledagentv1.VmmState_VMM_STATE_MIGRATING: datastore.VMMMigrating,
	sledagentv1.VmmState_VMM_STATE_FAILED:    datastore.VMMFailed,
	sledagentv1.VmmState_VMM_STATE_DESTROYED: datastore.VMMDestroyed,
}

// VMMStateUpdate applies a sled-agent's report of a VMM's runtime through
// the generation guard (V5, N3). It reports whether the row changed; an
// update whose generation is not newer changes nothing and is not an error,
// so the sled-agent does not retry it. A VMM nexus does not know is
// ErrNotFound, which the sled-agent treats as permanent.
func (n *Nexus) VMMStateUpdate(ctx context.Context, req *nexusv1.VmmStateUpdateRequest) (bool, error) {
	var v apierror.Violations
	id := v.UUID("vmm_id", req.GetVmmId())
	rt := req.GetRuntime()
	state, known := vmmStates[rt.GetState()]
	switch {
	case rt == nil:
		v.Add("runtime", "is required")
	case !known:
		v.Add("runtime.state", "unknown VMM state %s", rt.GetState())
	}
	if rt != nil && rt.GetGeneration() == 0 {
		v.Add("runtime.generation", "must be at least 1")
	}
	if err := v.Err(); err != nil {
		return false, err
	}
	wrote, err := n.ds.VMMUpdateRuntime(ctx, id, datastore.VMMRuntime{
		State: state, Generation: rt.GetGeneration(), TimeUpdated: rt.GetTimeUpdated().AsTime(),
	})
	if err != nil {
		return false, err
	}
	if wrote && state.Terminal() {
		// The instance update saga (N6) takes it from here once it exists;
		// until then the VMM row records the outcome.
		n.log.Info("VMM became terminal", zap.Stringer("vmm_id", id), zap.String("state", string(state)),
			zap.Uint64("generation", rt.GetGeneration()))
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
