package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/racktest"
)

// faultKind is a kind of fault the harness injects.
type faultKind string

const (
	// faultReplicaKill is kill -9 of a replica's zone process; its
	// sled-agent starts it again after a backoff.
	faultReplicaKill faultKind = "replica-kill"
	// faultSledKill is kill -9 of a sled-agent, restarted after the hold:
	// it forgets its VMMs (V7) and adopts its zones (Z10).
	faultSledKill faultKind = "sled-kill"
	// faultSledPause is SIGSTOP of a sled-agent, SIGCONT after the hold.
	faultSledPause faultKind = "sled-pause"
	// faultPartition cuts a sled's proxy, so that no replica reaches its
	// agent, until the hold ends. The sled still reaches the replicas.
	faultPartition faultKind = "partition"
	// faultDBPartition cuts one replica's link to the database until the
	// hold ends: its open connections drop and new ones are refused,
	// while the other replicas and the sleds go on reaching it.
	faultDBPartition faultKind = "db-partition"
	// faultDBFailover kills the database's primary and lets
	// pg_auto_failover promote its synchronous standby (R2); the killed
	// node then rejoins as the standby. The run's database is then a
	// pgfailover formation.
	faultDBFailover faultKind = "db-failover"
)

// allFaults are the faults a run injects by default.
var allFaults = []faultKind{faultReplicaKill, faultSledKill, faultSledPause, faultPartition, faultDBPartition}

// knownFaults are every fault --faults names: db-failover only when asked
// for, since its formation takes a minute to set up and every failover
// another to rejoin.
var knownFaults = append(slices.Clone(allFaults), faultDBFailover)

func faultNames(kinds []faultKind) []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = string(k)
	}
	return out
}

// parseFaults reads --faults; an empty name alone means none.
func parseFaults(names []string) ([]faultKind, error) {
	var out []faultKind
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		k := faultKind(n)
		if !slices.Contains(knownFaults, k) {
			return nil, fmt.Errorf("--faults: %q is none of %s", n, strings.Join(faultNames(knownFaults), ", "))
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out, nil
}

// replicaRestartBound bounds a killed replica's sled-agent starting it
// again (after a backoff) until it serves.
const replicaRestartBound = time.Minute

// faultLog is what was injected.
type faultLog struct {
	mu     sync.Mutex
	counts map[faultKind]int
	events []string
	// failure is why injecting or healing a fault failed: the run's
	// result is then not to be trusted.
	failure error
}

func (l *faultLog) record(kind faultKind, what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[faultKind]int{}
	}
	l.counts[kind]++
	l.events = append(l.events, what)
}

func (l *faultLog) count(kind faultKind) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[kind]
}

func (l *faultLog) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failure = err
}

// between draws a duration in [d/4, d].
func between(rnd *rand.Rand, d time.Duration) time.Duration {
	return d/4 + time.Duration(rnd.Int64N(int64(d-d/4)+1))
}

// injectFaults injects one fault at a time on the seeded schedule until
// stop closes, healing each one before the next (and the last one at
// once when stop closes).
func (h *harness) injectFaults(stop <-chan struct{}) {
	if len(h.o.faults) == 0 && !h.o.expunge {
		return
	}
	rnd := rand.New(rand.NewPCG(h.o.seed, 1))
	expungeAt := time.Now().Add(h.o.duration / 2)
	for {
		select {
		case <-stop:
			return
		case <-time.After(between(rnd, h.o.faultGap)):
		}
		if h.o.expunge && h.expunged.Load() < 0 && time.Now().After(expungeAt) {
			// In the faults' own sequence, so that no fault is held on
			// the replica while it goes.
			target, began := rnd.IntN(replicas), time.Now()
			if err := h.do(func() { target = h.expunge(target) }); err != nil {
				h.faults.fail(fmt.Errorf("expunge of %d: %w", target, err))
				h.say("EXPUNGE FAILED: %d: %v", target, err)
				return
			}
			h.faults.record(faultExpunge, fmt.Sprintf("%s expunge of %d, accepted after %s", began.Format("15:04:05.000"),
				target, time.Since(began).Round(time.Millisecond)))
			continue
		}
		if len(h.o.faults) == 0 {
			continue
		}
		kind := h.o.faults[rnd.IntN(len(h.o.faults))]
		target := rnd.IntN(sleds)
		if kind == faultReplicaKill || kind == faultDBPartition {
			target = h.serving(target)
		}
		hold := between(rnd, h.o.faultHold)
		if err := h.do(func() { h.inject(kind, target, hold, stop) }); err != nil {
			h.faults.fail(fmt.Errorf("%s of %d: %w", kind, target, err))
			h.say("FAULT INJECTION FAILED: %s of %d: %v", kind, target, err)
			return
		}
	}
}

// inject injects a fault of kind on replica or sled target, holds it for
// hold (less if stop closes), and heals it.
func (h *harness) inject(kind faultKind, target int, hold time.Duration, stop <-chan struct{}) {
	wait := func() {
		select {
		case <-stop:
		case <-time.After(hold):
		}
	}
	began := time.Now()
	switch kind {
	case faultReplicaKill:
		n := h.rack.Nexus(target).(*racktest.ZoneNexus)
		h.say("fault: kill -9 of replica %d (%s)", target, n.ID())
		n.Kill()
		// Not ZoneNexus.Restart: it reads the zone's record while the
		// sled-agent replaces it, and fails when it finds none.
		testutil.WaitFor(h.tb, replicaRestartBound, func() error {
			if !n.Running() {
				return fmt.Errorf("replica %d has not been started again", target)
			}
			return racktest.Serving(h.tb, n.InternalAddr(), "")
		})
	case faultSledKill:
		s := h.rack.Sled(target).(*racktest.ProcessSled)
		h.say("fault: kill -9 of sled-agent %d (%s) for %s", target, s.ID(), hold.Round(time.Millisecond))
		s.Kill()
		wait()
		s.Restart()
	case faultSledPause:
		s := h.rack.Sled(target).(*racktest.ProcessSled)
		h.say("fault: SIGSTOP of sled-agent %d (%s) for %s", target, s.ID(), hold.Round(time.Millisecond))
		s.Pause()
		wait()
		s.Resume()
	case faultPartition:
		s := h.rack.Sled(target)
		h.say("fault: partition of sled %d (%s) from every replica for %s", target, s.ID(), hold.Round(time.Millisecond))
		s.Isolate()
		wait()
		s.Heal()
	case faultDBPartition:
		p := h.dbLinks[target]
		h.say("fault: partition of replica %d (%s) from the database for %s", target, h.rack.Nexus(target).ID(),
			hold.Round(time.Millisecond))
		p.Cut()
		wait()
		p.Heal()
	case faultDBFailover:
		h.failOver(h.faults.count(faultDBFailover) + 1)
	}
	of := fmt.Sprintf(" of %d", target)
	if kind == faultDBFailover {
		of = "" // of whichever node is the primary
	}
	h.faults.record(kind, fmt.Sprintf("%s %s%s, healed after %s", began.Format("15:04:05.000"), kind, of,
		time.Since(began).Round(time.Millisecond)))
}
