package nexus_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"

	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

// N14 end to end: the prune_history task runs with the configured
// retention (here, as short as can be). Once an instance was started,
// stopped and started again and no saga is open, a pass prunes the VMM it
// ran on first and the finished sagas, counts them, and users see the
// instance exactly as before; a late report of the pruned VMM is a clean
// not-found; the instance still stops and starts.
func TestN14_ThePruneHistoryTaskPrunesWhatEndedAndUsersSeeNoDifference(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1,
				NexusConfig: func(_ int, c *config.Config) { c.HistoryRetention = duration.Duration(time.Nanosecond) }})
			n, api := r.Server(), r.Client(racktest.FleetAdmin)
			c := api.SDK(t)
			_, first := runningInstance(t, n, c)
			stopThenStart := func() {
				t.Helper()
				if _, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"}); err != nil {
					t.Fatal(err)
				}
				waitRunState(t, c, "p", "vm", oxide.InstanceStateStopped)
				if _, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"}); err != nil {
					t.Fatal(err)
				}
				waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
			}
			stopThenStart()
			// An open saga keeps the VMMs created in the hour before it.
			testutil.WaitFor(t, 10*time.Second, func() error {
				open, err := n.DataStore().SagaListOpen(ctx)
				if err == nil && len(open) > 0 {
					err = fmt.Errorf("%d sagas still open", len(open))
				}
				return err
			})
			view := api.MustCall(t, http.MethodGet, "/v1/instances/vm?project=p", "", http.StatusOK).Body
			list := api.MustCall(t, http.MethodGet, "/v1/instances?project=p", "", http.StatusOK).Body

			activate(t, n, nexus.TaskPruneHistory)
			if _, err := n.DataStore().VMMGet(ctx, first.ID); !errors.Is(err, model.ErrNotFound) {
				t.Fatalf("the first, ended VMM after pruning: %v, want not found", err)
			}
			if got := metric(t, n, `nexus_events_total{event="`+app.EventVMMPruned+`"}`); got != 1 {
				t.Fatalf("vmm_pruned counted %v, want 1", got)
			}
			for _, event := range []string{app.EventSagaPruned, app.EventSagaEventPruned} {
				if got := metric(t, n, `nexus_events_total{event="`+event+`"}`); got < 2 {
					t.Errorf("%s counted %v, want the sagas of a create, a stop and a start", event, got)
				}
			}
			if after := api.MustCall(t, http.MethodGet, "/v1/instances/vm?project=p", "", http.StatusOK).Body; string(after) != string(view) {
				t.Fatalf("the instance read\n%s\nbefore pruning, and\n%s\nafter", view, after)
			}
			if after := api.MustCall(t, http.MethodGet, "/v1/instances?project=p", "", http.StatusOK).Body; string(after) != string(list) {
				t.Fatalf("the instances listed\n%s\nbefore pruning, and\n%s\nafter", list, after)
			}
			late := app.VMMReport{Sled: first.SledID, VMM: first.ID,
				Runtime: model.VMMRuntime{State: model.VMMDestroyed, Generation: first.Runtime.Generation + 100, TimeUpdated: time.Now()}}
			if _, err := n.App().VMMStateUpdate(ctx, late); !errors.Is(err, model.ErrNotFound) {
				t.Fatalf("a late report of the pruned VMM: %v, want not found", err)
			}
			stopThenStart()
		})
	}
}
