package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	"github.com/rackplane/rackplane/services/racktest"
)

// TestN5_ARestartedNexusThatCannotReachTheSledUndoesWhatItsDeadRunDid: nexus
// dies with the start saga at a sled-facing node, and the restarted nexus
// cannot reach that sled (a partition, healed once the retried node has
// failed). The retry fails, so the saga unwinds; it must still undo what
// the dead nexus's run of that node may have done. At
// ensure_registered/after that is a VMM registered on the sled: left there,
// it would be a VMM no instance points at.
func TestN5_ARestartedNexusThatCannotReachTheSledUndoesWhatItsDeadRunDid(t *testing.T) {
	partition := &fault{name: "partitioned",
		whileDown: func(t *testing.T, s racktest.Sled, _ string) { s.Isolate() },
		afterRestart: func(t *testing.T, s racktest.Sled, ds *datastore.DataStore, sagaID uuid.UUID) {
			// Heal once the restarted nexus has tried the sled and failed,
			// so that the undo of that failure reaches it: promptly, since
			// nexus's gRPC connection to the sled retries about 1 s after
			// the refusal and the undo's 5 tries span 1.2-1.5 s; a heal
			// later than that would leave the saga stuck (which is right
			// for a sled that stays unreachable, but not this test).
			testutil.WaitFor(t, settleTimeout, func() error {
				events, err := ds.SagaEvents(bg, sagaID)
				if err != nil {
					return err
				}
				for _, ev := range events {
					if ev.Type == saga.EventFailed {
						return nil
					}
				}
				return fmt.Errorf("saga %s has no failed node yet", sagaID)
			})
			s.Heal()
		}}
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			t.Parallel()
			for _, node := range []string{"ensure_registered", "ensure_running"} {
				for _, at := range []string{"before", "after"} {
					point := crashPoint{Template: sagas.InstanceStart, Node: node, After: at == "after"}
					t.Run(partition.name+"-"+node+"-"+at, func(t *testing.T) {
						if got := crashAndRecover(t, backend, startScenario, point, partition); !strings.HasPrefix(got, "unwound") {
							t.Fatalf("the saga %s; want it unwound", got)
						}
					})
				}
			}
		})
	}
}
