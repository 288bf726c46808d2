package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/racktest"
)

// sledRow is a sled as the sled API shows it.
type sledRow struct {
	ID           string    `json:"id"`
	Reachability string    `json:"reachability"`
	TimeLastSeen time.Time `json:"time_last_seen"`
}

// listSleds reads every page of the sled API.
func (b *bench) listSleds(ctx context.Context) ([]sledRow, error) {
	return racktest.List[sledRow](ctx, b.api, "/v1/system/hardware/sleds?limit=1000")
}

// excuse is a window in which a sled (uuid.Nil: every sled) may be shown
// unreachable without it being a false report: the lost sled while the
// harness has it stopped, every sled while nexus restarts. An open window
// has a zero to.
type excuse struct {
	sled     uuid.UUID
	why      string
	from, to time.Time
}

// falseReport is a sled shown unreachable that the harness did not stop.
type falseReport struct {
	At    time.Time `json:"at"`
	Phase string    `json:"phase"`
	Sled  string    `json:"sled"`
	// LastSeen is when the sled had last heartbeated, as nexus said.
	LastSeen time.Time `json:"last_seen"`
}

// sledWatch polls the sled list every --sled-poll for false reports.
type sledWatch struct {
	b *bench

	mu       sync.Mutex
	phase    string
	excuses  []*excuse
	polls    int
	errors   int
	lastErr  string
	excused  map[string]int // sightings excused, by why
	reports  []falseReport
	noField  int // polls where some sled had no reachability
	shortfed int // polls that did not list every sled
	stopped  bool
	done     chan struct{}
}

func newSledWatch(b *bench) *sledWatch {
	return &sledWatch{b: b, phase: "set-up", excused: map[string]int{}, done: make(chan struct{})}
}

func (w *sledWatch) setPhase(p string) {
	w.mu.Lock()
	w.phase = p
	w.mu.Unlock()
}

// open starts an excuse window now; close it with closeAt.
func (w *sledWatch) open(sled uuid.UUID, why string) *excuse {
	e := &excuse{sled: sled, why: why, from: time.Now()}
	w.mu.Lock()
	w.excuses = append(w.excuses, e)
	w.mu.Unlock()
	return e
}

func (w *sledWatch) closeAt(e *excuse, at time.Time) {
	w.mu.Lock()
	e.to = at
	w.mu.Unlock()
}

func (w *sledWatch) loop(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(w.b.o.sledPoll)
	defer t.Stop()
	for {
		w.mu.Lock()
		stopped := w.stopped
		w.mu.Unlock()
		if stopped {
			return
		}
		w.pollOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *sledWatch) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	<-w.done
}

// pollOnce reads the sled list once and judges every unreachable sled.
func (w *sledWatch) pollOnce(ctx context.Context) {
	sent := time.Now()
	sleds, err := w.b.listSleds(ctx)
	got := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	// excusedBy is the window that covers a sighting of sled made while
	// the request was under way.
	excusedBy := func(sled uuid.UUID) *excuse {
		for _, e := range w.excuses {
			if (e.sled == uuid.Nil || e.sled == sled) && !e.from.After(got) && (e.to.IsZero() || !e.to.Before(sent)) {
				return e
			}
		}
		return nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		if e := excusedBy(uuid.Nil); e != nil && e.sled == uuid.Nil {
			return // nexus is restarting
		}
		w.errors++
		w.lastErr = err.Error()
		return
	}
	w.polls++
	if len(sleds) < len(w.b.sleds) {
		w.shortfed++
	}
	missing := false
	for _, s := range sleds {
		switch s.Reachability {
		case "reachable":
			continue
		case "":
			missing = true
			continue
		}
		id, _ := uuid.Parse(s.ID)
		if e := excusedBy(id); e != nil {
			w.excused[e.why]++
			continue
		}
		w.reports = append(w.reports, falseReport{At: got, Phase: w.phase, Sled: s.ID, LastSeen: s.TimeLastSeen})
		w.b.say("FALSE REPORT: sled %s shown %s during %s (last seen %s ago)", s.ID, s.Reachability, w.phase,
			got.Sub(s.TimeLastSeen).Round(time.Millisecond))
	}
	if missing {
		w.noField++
	}
}

// waitExcused waits until the watch has excused a sighting for why.
func (w *sledWatch) waitExcused(ctx context.Context, why string, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		w.mu.Lock()
		n := w.excused[why]
		w.mu.Unlock()
		if n > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the sled list polls saw no sled unreachable for %q within %s", why, bound)
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// figures are what the watch saw.
func (w *sledWatch) figures() falseReports {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := falseReports{Count: len(w.reports), Polls: w.polls, PollErrors: w.errors, Reports: append([]falseReport(nil), w.reports...),
		Excused: map[string]int{}, PollsWithoutReachability: w.noField, PollsMissingSleds: w.shortfed}
	for k, v := range w.excused {
		f.Excused[k] = v
	}
	if w.errors > 0 {
		f.LastPollError = w.lastErr
	}
	return f
}

// waitHeartbeatedSince polls until every sled has heartbeated since at
// (nexus's time_last_seen), and none is unreachable.
func (b *bench) waitHeartbeatedSince(ctx context.Context, at time.Time, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		sleds, err := b.listSleds(ctx)
		if err == nil {
			behind := 0
			for _, s := range sleds {
				if s.TimeLastSeen.Before(at) || s.Reachability != "reachable" {
					behind++
				}
			}
			if behind == 0 && len(sleds) >= len(b.sleds) {
				return nil
			}
			err = fmt.Errorf("%d of %d sleds have not heartbeated since %s or are not reachable", behind, len(sleds), at.Format(time.RFC3339Nano))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", bound, err)
		}
		if err := pause(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// pause waits d between two polls, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
