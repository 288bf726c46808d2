package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rackplane/rackplane/pkg/testutil"
)

const (
	// writeBackBound bounds the API writing again once the database's
	// primary is killed (R2): pg_auto_failover's detection and promotion
	// (seconds with pgfailover's timings) and the replicas finding the
	// new primary. A failover that takes longer is a violation.
	writeBackBound = time.Minute
	// probeTimeout bounds one probe write: a write with no answer by then
	// counts as failed with no answer.
	probeTimeout = 10 * time.Second
	// probePause is the pause between two probe writes, so that the probe
	// measures to a tenth of a second without crowding the clients out.
	probePause = 100 * time.Millisecond
)

// Invariant names of the db-failover fault, as the summary prints them.
const (
	invWriteBack = "the API writes again within 1m of each database failover, with no operator action (R2)"
	invNoLoss    = "no acknowledged write lost across a database failover (R2)"
)

// failover is one db-failover fault as measured.
type failover struct {
	killed, promoted string
	// promotion is from the kill to the monitor's promotion of the
	// standby; writeBack from the kill to the answer of the first write
	// through the API sent after it and acknowledged (0: none within
	// writeBackBound); rejoin from the promotion to the killed node being
	// the new synchronous standby.
	promotion, writeBack, rejoin time.Duration
	// failed counts the probe writes that failed, by HTTP status (0: no
	// answer within probeTimeout).
	failed map[int]int
}

func (f failover) String() string {
	back := fmt.Sprintf("no API write within %s", writeBackBound)
	if f.writeBack > 0 {
		back = "the API writes again after " + f.writeBack.Round(time.Millisecond).String()
	}
	var failed []string
	for _, status := range slices.Sorted(maps.Keys(f.failed)) {
		what := fmt.Sprint(status)
		if status == 0 {
			what = "no answer"
		}
		failed = append(failed, fmt.Sprintf("%d× %s", f.failed[status], what))
	}
	if len(failed) == 0 {
		failed = []string{"none"}
	}
	return fmt.Sprintf("primary %s killed, %s promoted after %s; %s (probe writes failed: %s); %s rejoined as the synchronous standby after %s",
		f.killed, f.promoted, f.promotion.Round(time.Millisecond), back, strings.Join(failed, ", "), f.killed,
		f.rejoin.Round(time.Millisecond))
}

// failOver is the db-failover fault: it kills the database's primary with
// a probe writing through the API all along, waits for pg_auto_failover
// to promote the standby and for the API to acknowledge a write again,
// then starts the killed node again, for it to rejoin as the standby that
// the next db-failover needs. It runs as long as that takes, whatever the
// drawn hold.
func (h *harness) failOver(seq int) {
	p := h.startProbe(fmt.Sprintf("failover-%d", seq))
	// A write acknowledged just before the kill is the one a lost commit
	// would take with it.
	testutil.WaitFor(h.tb, writeBackBound, func() error {
		if p.acknowledgedSince(time.Time{}) == nil {
			return errors.New("the probe has no write acknowledged before the kill yet")
		}
		return nil
	})
	old := h.formation.KillPrimary()
	killed := time.Now()
	h.say("fault: kill -9 of the database's primary %s", old)
	promoted := h.formation.WaitPromoted(old)
	f := failover{killed: old, promoted: promoted, promotion: time.Since(killed)}
	h.say("fault: pg_auto_failover promoted %s after %s", promoted, f.promotion.Round(time.Millisecond))
	var back *probeWrite
	testutil.Poll(writeBackBound, func() error { //nolint:errcheck // none in time is recorded as such
		if back = p.acknowledgedSince(killed); back == nil {
			return errors.New("no write acknowledged since the kill")
		}
		return nil
	})
	p.stop()
	if back != nil {
		f.writeBack = back.done.Sub(killed)
	}
	f.failed = p.failures()
	h.say("fault: %s starting again, to rejoin as the standby", old)
	rejoining := time.Now()
	h.formation.Rejoin(old)
	f.rejoin = time.Since(rejoining)
	h.mu.Lock()
	h.failovers = append(h.failovers, f)
	h.probed = append(h.probed, p.acknowledged()...)
	h.mu.Unlock()
	h.say("fault: database failover done: %s", f)
}

// probe creates projects through the replicas in turn, one after another,
// recording each write, until stopped: the API's writes as a client sees
// them across a failover.
type probe struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	writes []probeWrite
}

// probeWrite is one project create: when it was sent and answered, and
// its status (0: no answer within probeTimeout).
type probeWrite struct {
	name       string
	sent, done time.Time
	status     int
}

func (w probeWrite) acknowledged() bool { return w.status >= 200 && w.status < 300 }

func (h *harness) startProbe(prefix string) *probe {
	ctx, cancel := context.WithCancel(context.Background())
	p := &probe{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; ctx.Err() == nil; i++ {
			w := probeWrite{name: fmt.Sprintf("%s-%d", prefix, i), sent: time.Now()}
			callCtx, cancel := context.WithTimeout(ctx, probeTimeout)
			resp, err := h.apis[h.serving(i%len(h.apis))].Do(callCtx, http.MethodPost, "/v1/projects",
				fmt.Sprintf(`{"name": %q, "description": "R2 probe"}`, w.name))
			cancel()
			if ctx.Err() != nil {
				return // stopped: neither a failure nor an acknowledgement
			}
			if err == nil {
				w.status = resp.Status
			}
			w.done = time.Now()
			p.mu.Lock()
			p.writes = append(p.writes, w)
			p.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(probePause):
			}
		}
	}()
	return p
}

func (p *probe) stop() {
	p.cancel()
	<-p.done
}

// acknowledgedSince is the first write sent after t and acknowledged; nil
// when there is none yet.
func (p *probe) acknowledgedSince(t time.Time) *probeWrite {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.writes {
		if w.sent.After(t) && w.acknowledged() {
			return &w
		}
	}
	return nil
}

// acknowledged are the names of the projects whose create was
// acknowledged.
func (p *probe) acknowledged() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var names []string
	for _, w := range p.writes {
		if w.acknowledged() {
			names = append(names, w.name)
		}
	}
	return names
}

// failures counts the writes that failed, by status.
func (p *probe) failures() map[int]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[int]int{}
	for _, w := range p.writes {
		if !w.acknowledged() {
			out[w.status]++
		}
	}
	return out
}

// failoverVerdicts are the db-failover fault's invariants: the API wrote
// again after each failover, and every project create a probe saw
// acknowledged is there once the run is over. Instance changes the clients
// saw acknowledged are the linearizability check's.
func (h *harness) failoverVerdicts(ctx context.Context) []verdict {
	h.mu.Lock()
	failovers, probed := slices.Clone(h.failovers), slices.Clone(h.probed)
	h.mu.Unlock()
	back := verdict{name: invWriteBack}
	for i, f := range failovers {
		if f.writeBack == 0 {
			back.problems = append(back.problems, fmt.Sprintf("failover %d: %s", i+1, f))
		}
	}
	lost := verdict{name: invNoLoss}
	for _, name := range probed {
		ctx, cancel := context.WithTimeout(ctx, probeTimeout)
		resp, err := h.apis[h.serving(0)].Do(ctx, http.MethodGet, "/v1/projects/"+name, "")
		cancel()
		switch {
		case err != nil:
			lost.problems = append(lost.problems, fmt.Sprintf("project %s, acknowledged: GET: %v", name, err))
		case resp.Status != http.StatusOK:
			lost.problems = append(lost.problems, fmt.Sprintf("project %s, acknowledged: GET answers %d: %s", name, resp.Status, resp.Body))
		}
	}
	return []verdict{back, lost}
}
