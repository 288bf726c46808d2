package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/testutil"
	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/racktest"
)

// sledLossBound bounds each wait of the sled loss scenario; the scenario's
// timeout is far shorter (the figure SPEC 6 sets is the scale harness's to
// measure, not this test's).
const sledLossBound = 60 * time.Second

type sledJSON struct {
	ID           string `json:"id"`
	Reachability string `json:"reachability"`
	TimeLastSeen string `json:"time_last_seen"`
}

type instanceJSON struct {
	ID               string  `json:"id"`
	RunState         string  `json:"run_state"`
	SledReachability *string `json:"sled_reachability"`
}

// TestSPEC6_F7_N8_ASledThatStopsAnsweringIsUnreachableGetsNoNewVMMAndComesBack
// stops a sled-agent with SIGSTOP under a real nexus process. The sled API
// shows it unreachable (and only it: the other sled is never reported),
// its instance shows its sled unreachable yet still running while watcher
// passes run (F7, N8: unreachable is no verdict), new instances all go to
// the other sled, and once it answers again it is reachable and its
// instance untouched.
func TestSPEC6_F7_N8_ASledThatStopsAnsweringIsUnreachableGetsNoNewVMMAndComesBack(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		r := racktest.StartProcesses(t, racktest.Options{Backend: db.Backend, DatabaseURL: db.URL, Sleds: 2,
			NexusConfig: func(_ int, c *nexusconfig.Config) {
				// The harness's sleds heartbeat every 20 ms.
				c.SledHeartbeatTimeout = duration.Duration(3 * time.Second)
				c.SledLivenessPeriod = duration.Duration(200 * time.Millisecond)
				c.InstanceWatcherPeriod = duration.Duration(200 * time.Millisecond)
			}})
		admin := r.Client(racktest.FleetAdmin)
		admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name": "p", "description": ""}`, http.StatusCreated)
		create := func(name string) instanceJSON {
			t.Helper()
			var inst instanceJSON
			resp := admin.MustCall(t, http.MethodPost, "/v1/instances?project=p", fmt.Sprintf(
				`{"name": %q, "description": "", "hostname": %q, "ncpus": 1, "memory": 1073741824}`, name, name), http.StatusCreated)
			if err := resp.JSON(&inst); err != nil {
				t.Fatal(err)
			}
			return inst
		}
		view := func(id string) instanceJSON {
			t.Helper()
			var inst instanceJSON
			if err := admin.MustCall(t, http.MethodGet, "/v1/instances/"+id, "", http.StatusOK).JSON(&inst); err != nil {
				t.Fatal(err)
			}
			return inst
		}
		waitRunning := func(id string) {
			t.Helper()
			testutil.WaitFor(t, sledLossBound, func() error {
				if got := view(id); got.RunState != "running" {
					return fmt.Errorf("instance %s is %s", id, got.RunState)
				}
				return nil
			})
		}
		lost := create("lost")
		waitRunning(lost.ID)
		if got := view(lost.ID).SledReachability; got == nil || *got != "reachable" {
			t.Fatalf("a running instance's sled_reachability is %v, want reachable", got)
		}
		lostSled, healthy := sledOfInstance(t, r, lost.ID)

		falseReports := 0
		sleds := func() map[uuid.UUID]sledJSON {
			t.Helper()
			var page struct {
				Items []sledJSON `json:"items"`
			}
			if err := admin.MustCall(t, http.MethodGet, "/v1/system/hardware/sleds", "", http.StatusOK).JSON(&page); err != nil {
				t.Fatal(err)
			}
			out := map[uuid.UUID]sledJSON{}
			for _, s := range page.Items {
				out[uuid.MustParse(s.ID)] = s
				if s.TimeLastSeen == "" {
					t.Fatalf("sled %s has no time_last_seen", s.ID)
				}
			}
			if out[healthy.ID()].Reachability != "reachable" {
				falseReports++
			}
			return out
		}

		lostSled.Pause()
		testutil.WaitFor(t, sledLossBound, func() error {
			if got := sleds()[lostSled.ID()].Reachability; got != "unreachable" {
				return fmt.Errorf("the stopped sled is %q", got)
			}
			return nil
		})
		watched := watcherPasses(t, r)
		testutil.WaitFor(t, sledLossBound, func() error {
			if n := watcherPasses(t, r); n < watched+2 {
				return fmt.Errorf("%d watcher passes since the sled stopped, want 2", n-watched)
			}
			return nil
		})
		if got := view(lost.ID); got.RunState != "running" || got.SledReachability == nil || *got.SledReachability != "unreachable" {
			t.Fatalf("the instance of the stopped sled: run_state %s, sled_reachability %v; want running on an unreachable sled",
				got.RunState, got.SledReachability)
		}
		for i := range 3 {
			inst := create(fmt.Sprintf("new-%d", i))
			waitRunning(inst.ID)
			if on, _ := sledOfInstance(t, r, inst.ID); on.ID() != healthy.ID() {
				t.Fatalf("instance %s was placed on the unreachable sled", inst.ID)
			}
		}

		lostSled.Resume()
		testutil.WaitFor(t, sledLossBound, func() error {
			if got := sleds()[lostSled.ID()].Reachability; got != "reachable" {
				return fmt.Errorf("the resumed sled is %q", got)
			}
			return nil
		})
		if got := view(lost.ID); got.RunState != "running" || *got.SledReachability != "reachable" {
			t.Fatalf("the instance of the resumed sled: run_state %s, sled_reachability %v", got.RunState, *got.SledReachability)
		}
		if falseReports > 0 {
			t.Fatalf("the healthy sled was reported unreachable %d times", falseReports)
		}
	})
}

// sledOfInstance is the sled the database places the instance's active VMM
// on, and the other one.
func sledOfInstance(t *testing.T, r *racktest.Processes, instance string) (on, other racktest.Sled) {
	t.Helper()
	vmms, err := r.DataStore().VMMListActive(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vmms {
		if v.InstanceID.String() != instance {
			continue
		}
		for i, s := range r.Sleds() {
			if s.ID() == v.SledID {
				return s, r.Sled(1 - i)
			}
		}
	}
	t.Fatalf("instance %s has no VMM on a sled of the rack", instance)
	return nil, nil
}

// watcherPasses is how many instance watcher passes nexus has counted.
func watcherPasses(t *testing.T, r *racktest.Processes) int {
	t.Helper()
	m, err := racktest.ScrapeMetrics(context.Background(), r.Nexus(0).MetricsURL())
	if err != nil {
		t.Fatal(err)
	}
	passes, _ := m.Sum("nexus_background_task_duration_seconds", map[string]string{"task": "instance_watcher"})
	return int(passes)
}
