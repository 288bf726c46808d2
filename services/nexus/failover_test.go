package nexus_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/pgfailover"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/racktest"
)

// failoverBound is a generous bound on the API's unavailability while
// the database fails over: pg_auto_failover's own detection and promotion
// (seconds with pgfailover's timings) and nexus finding the new primary.
const failoverBound = time.Minute

// TestR2_AnAcknowledgedWriteSurvivesAFailoverAndNexusCarriesOnAgainstTheNewPrimary
// writes projects through the API without a pause while the database's
// primary is killed and pg_auto_failover promotes its synchronous standby:
// writes come back with no operator action, every write nexus acknowledged
// is still there, and while they fail they fail as 503, which a client
// retries.
func TestR2_AnAcknowledgedWriteSurvivesAFailoverAndNexusCarriesOnAgainstTheNewPrimary(t *testing.T) {
	formation := pgfailover.Start(t)
	rack := racktest.Start(t, racktest.InProcessKind, racktest.Options{Backend: datastore.Postgres, DatabaseURL: formation.DSN()})
	client := rack.Client(racktest.FleetAdmin)

	w := startWriter(client)
	defer w.stop()
	w.waitAcknowledged(t, 10, time.Now())

	old := formation.KillPrimary()
	killed := time.Now()
	promoted := formation.WaitPromoted(old)
	t.Logf("database primary %s killed; pg_auto_failover promoted %s after %s", old, promoted, time.Since(killed).Round(time.Millisecond))
	w.waitAcknowledged(t, 10, time.Now())
	writes := w.stop()

	acknowledged, window, failed := summarize(writes)
	t.Logf("%d writes, %d acknowledged; failures %v; the API refused writes for %s", len(writes), len(acknowledged), failed, window.Round(time.Millisecond))
	if window > failoverBound {
		t.Errorf("writes failed for %s, more than %s", window, failoverBound)
	}
	for status, n := range failed {
		if status != http.StatusServiceUnavailable {
			t.Errorf("%d writes during the failover failed with %d (0: no answer within %s); want 503, which clients retry", n, status, writeTimeout)
		}
	}
	lost := 0
	for _, name := range acknowledged {
		resp := client.Call(t, "GET", "/v1/projects/"+name, "")
		if resp.Status != http.StatusOK {
			lost++
			t.Errorf("project %s was acknowledged before the failover but GET answers %d: %s", name, resp.Status, resp.Body)
		}
	}
	t.Logf("acknowledged writes lost: %d of %d", lost, len(acknowledged))
}

// write is one project create the writer made: when it was sent and
// answered, and the status (0 when no answer came in writeTimeout).
type write struct {
	name       string
	sent, done time.Time
	status     int
}

func (w write) acknowledged() bool { return w.status >= 200 && w.status < 300 }

// writer creates projects one after another until stopped, recording
// each attempt.
type writer struct {
	mu     sync.Mutex
	writes []write
	cancel context.CancelFunc
	done   chan struct{}
}

// writeTimeout bounds one write, so that a request stuck on a dead
// database connection counts as failed rather than stalling the writer.
const writeTimeout = 10 * time.Second

func startWriter(client *racktest.Client) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("failover-%d", i)
			one := write{name: name, sent: time.Now()}
			reqCtx, cancelReq := context.WithTimeout(ctx, writeTimeout)
			resp, err := client.Do(reqCtx, "POST", "/v1/projects", fmt.Sprintf(`{"name": %q, "description": ""}`, name))
			cancelReq()
			if ctx.Err() != nil {
				return // cut short by stop: neither acknowledged nor failed
			}
			one.done = time.Now()
			if err == nil {
				one.status = resp.Status
			}
			w.mu.Lock()
			w.writes = append(w.writes, one)
			w.mu.Unlock()
		}
	}()
	return w
}

// waitAcknowledged waits until n writes sent after since were
// acknowledged.
func (w *writer) waitAcknowledged(t *testing.T, n int, since time.Time) {
	t.Helper()
	testutil.WaitFor(t, failoverBound, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		got := 0
		for _, one := range w.writes {
			if one.acknowledged() && one.sent.After(since) {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d of %d writes acknowledged since %s", got, n, since.Format(time.StampMilli))
		}
		return nil
	})
}

// stop stops the writer and returns its writes.
func (w *writer) stop() []write {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes
}

// summarize gives the names of the acknowledged writes, how long writes
// failed (from the first failed write's sending to the answer of the
// first acknowledged one after it), and how many failed with each status
// (0: no answer).
func summarize(writes []write) (acknowledged []string, window time.Duration, failed map[int]int) {
	failed = map[int]int{}
	var firstFailure time.Time
	for _, one := range writes {
		switch {
		case one.acknowledged():
			acknowledged = append(acknowledged, one.name)
			if !firstFailure.IsZero() && window == 0 {
				window = one.done.Sub(firstFailure)
			}
		default:
			failed[one.status]++
			if firstFailure.IsZero() {
				firstFailure = one.sent
			}
		}
	}
	return acknowledged, window, failed
}
