package sledclient

import (
	"fmt"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
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

// Runtime converts a runtime a sled-agent reported.
func Runtime(rt *sledagentv1.VmmRuntime) (datastore.VMMRuntime, error) {
	state, ok := vmmStates[rt.GetState()]
	if !ok || rt.GetGeneration() == 0 {
		return datastore.VMMRuntime{}, fmt.Errorf("sled-agent reported an invalid VMM runtime %v", rt)
	}
	return datastore.VMMRuntime{State: state, Generation: rt.GetGeneration(), TimeUpdated: rt.GetTimeUpdated().AsTime()}, nil
}
