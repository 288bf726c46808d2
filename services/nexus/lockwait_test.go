package nexus_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

// lockHeldRack is a rack whose first instance update saga stops once it
// holds the updater lock (before "apply"), until the test releases it, with
// a running instance p/vm and that update started on it.
func lockHeldRack(t *testing.T, backend datastore.Backend, lockWait time.Duration) (*racktest.InProcess, *blockAt, string, string) {
	t.Helper()
	block := newBlockAt("apply")
	t.Cleanup(func() {
		select {
		case <-block.release:
		default:
			close(block.release)
		}
	})
	r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1, SledConfig: racktest.EverySled(explicitSleds),
		NexusOptions: []nexus.Option{block.option()},
		NexusConfig:  func(_ int, c *config.Config) { c.UpdaterLockWaitBound = duration.Duration(lockWait) }})
	n := r.Server()
	token := r.Token(racktest.FleetAdmin)
	inst, _, _ := startedInstance(t, n, racktest.NewClient(n.ExternalURL(), token).SDK(t), r.Agents())
	n.App().UpdateInstanceInBackground(inst.ID)
	<-block.reached // the update holds the lock
	return r, block, token, inst.ID.String()
}

// forceTerminateAsync calls force-terminate of p/vm and delivers its answer.
func forceTerminateAsync(n *nexus.Server, token string) <-chan racktest.Response {
	answered := make(chan racktest.Response, 1)
	go func() {
		resp, err := racktest.NewClient(n.ExternalURL(), token).Do(ctx, http.MethodPost, "/v1/instances/vm/force-terminate?project=p", "")
		if err != nil {
			resp = racktest.Response{Status: -1, Body: []byte(err.Error())}
		}
		answered <- resp
	}()
	return answered
}

// F6: a force-terminate that finds another update holding the instance's
// updater lock terminates the VMMs, then waits for that update instead of
// settling under it, and answers settled once it is done. Before the lock
// was honoured by a test, force-terminate could ignore it and break none.
func TestF6_AForceTerminateWaitsForTheUpdateHoldingTheLockThenSettles(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r, block, token, _ := lockHeldRack(t, backend, time.Minute)
			n := r.Server()
			answered := forceTerminateAsync(n, token)
			// It has terminated the VMM and found the lock held.
			testutil.WaitFor(t, 10*time.Second, func() error {
				if got := metric(t, n, `nexus_events_total{event="`+app.EventForceTerminateLockWait+`"}`); got < 1 {
					return fmt.Errorf("force-terminate has not waited for the lock yet (%v)", got)
				}
				return nil
			})
			if k := len(r.Agents()[0].Inventory().GetVmms()); k != 0 {
				t.Fatalf("%d VMMs still on the sled while force-terminate waits; want them terminated first", k)
			}
			select {
			case resp := <-answered:
				t.Fatalf("force-terminate answered %d %s while another update held the lock", resp.Status, resp.Body)
			default:
			}
			close(block.release)
			resp := <-answered
			var inst instanceJSON
			if resp.Status != http.StatusOK || resp.JSON(&inst) != nil || inst.RunState != "stopped" {
				t.Fatalf("force-terminate after the update ended: %d %s, want 200 stopped", resp.Status, resp.Body)
			}
			// Updates the VMM's end starts may take the lock for a moment
			// still; none keeps it.
			testutil.WaitFor(t, 10*time.Second, func() error {
				if _, err := n.DataStore().UpdaterLockGet(ctx, uuid.MustParse(inst.ID)); !errors.Is(err, model.ErrNotFound) {
					return fmt.Errorf("the updater lock after both ended: %v, want none", err)
				}
				return nil
			})
		})
	}
}

// F6, X6: when the holder never lets go, force-terminate answers 503 after
// its bound, naming the saga and replica that hold the lock, with the VMMs
// already terminated.
func TestF6_AForceTerminateWhoseLockHolderNeverEndsAnswers503NamingIt(t *testing.T) {
	r, _, token, _ := lockHeldRack(t, datastore.SQLite, 500*time.Millisecond)
	n := r.Server()
	resp := <-forceTerminateAsync(n, token)
	msg := resp.Error().Message
	if resp.Status != http.StatusServiceUnavailable || !strings.Contains(msg, "instance-update saga") ||
		!strings.Contains(msg, r.Nexus(0).ID().String()) {
		t.Fatalf("force-terminate under a lock never released: %d %q, want 503 naming the update saga and replica %s",
			resp.Status, msg, r.Nexus(0).ID())
	}
	if k := len(r.Agents()[0].Inventory().GetVmms()); k != 0 {
		t.Fatalf("%d VMMs still on the sled; a 503 for the lock comes after they are terminated", k)
	}
}
