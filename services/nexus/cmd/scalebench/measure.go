package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// The REST operations measured.
const (
	opList  = "list"
	opView  = "view"
	opStart = "start"
	opStop  = "stop"
	opFT    = "force-terminate"
)

var operations = []string{opList, opView, opStart, opStop, opFT}

// request is one measured REST request.
type request struct {
	op         string
	start, end time.Time
	status     int
	err        string
}

func (r request) ok() bool            { return r.err == "" && r.status >= 200 && r.status < 300 }
func (r request) took() time.Duration { return r.end.Sub(r.start) }

// recorder keeps a phase's requests.
type recorder struct {
	mu   sync.Mutex
	reqs []request
	ok   map[string]int
}

func newRecorder() *recorder { return &recorder{ok: map[string]int{}} }

func (r *recorder) add(q request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, q)
	if q.ok() {
		r.ok[q.op]++
	}
}

func (r *recorder) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.ok {
		out[k] = v
	}
	return out
}

func (r *recorder) all() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...)
}

// timed sends one measured request.
func (b *bench) timed(ctx context.Context, rec *recorder, op, method, path string) request {
	q := request{op: op, start: time.Now()}
	a, err := b.api.Do(ctx, method, path, "")
	q.end = time.Now()
	q.status = a.Status
	if err != nil {
		q.err = err.Error()
	} else if !q.ok() {
		q.err = fmt.Sprintf("%d %s", a.Status, strings.TrimSpace(string(a.Body)))
	}
	if ctx.Err() == nil {
		rec.add(q)
	}
	return q
}

// load runs the measured REST load until enough says so (checked a few
// times a second) or the phase's bound passes: one client listing a page
// of 100 instances, one viewing instances at random (each pausing
// --read-interval between requests), and one client per reserved
// instance, each driving its instance through force-terminate, start,
// stop, start, … and waiting for it to settle after each (those waits are
// not measured).
func (b *bench) load(ctx context.Context, phase string, enough func(rec *recorder) bool) (*recorder, error) {
	rec := newRecorder()
	stop := make(chan struct{})
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	var wg sync.WaitGroup
	reader := func(op string, path func() string) {
		defer wg.Done()
		for !stopped() && ctx.Err() == nil {
			b.timed(ctx, rec, op, http.MethodGet, path())
			if b.o.readInterval > 0 {
				pause(ctx, b.o.readInterval) //nolint:errcheck // ctx is checked by the loop
			}
		}
	}
	wg.Add(2)
	go reader(opList, func() string { return "/v1/instances?project=" + project + "&limit=100" })
	go reader(opView, func() string { return "/v1/instances/" + b.instances[rand.IntN(len(b.instances))] })
	for _, id := range b.reserved {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.cycle(ctx, rec, id, stopped)
		}()
	}
	deadline := time.Now().Add(b.o.phaseTimeout)
	lastSaid := time.Now()
	var err error
	for {
		counts := rec.counts()
		if enough(rec) {
			break
		}
		if time.Now().After(deadline) {
			b.problem("the %s phase ended at its bound (--phase-timeout %s) with these samples: %v", phase, b.o.phaseTimeout, counts)
			break
		}
		if time.Since(lastSaid) > progressEvery {
			b.say("  %s: samples %v", phase, counts)
			lastSaid = time.Now()
		}
		if err = pause(ctx, 200*time.Millisecond); err != nil {
			break
		}
	}
	close(stop)
	wg.Wait()
	return rec, err
}

// transitional are the run states an instance leaves on its own.
var transitional = map[string]bool{"creating": true, "starting": true, "stopping": true, "rebooting": true,
	"migrating": true, "repairing": true}

// cycle drives one reserved instance until stopped says so: a running one
// is force-terminated and stopped by turns, a stopped (or failed) one
// started; each measured request is followed by an unmeasured wait until
// the instance settles.
func (b *bench) cycle(ctx context.Context, rec *recorder, id string, stopped func() bool) {
	forceNext := true
	for !stopped() && ctx.Err() == nil {
		state, err := b.settle(ctx, id, stopped)
		if err != nil {
			if ctx.Err() == nil && !stopped() {
				b.problem("reserved instance %s: %v; it is measured no more", id, err)
			}
			return
		}
		if stopped() {
			return
		}
		path := "/v1/instances/" + id
		switch state {
		case "running":
			if forceNext {
				b.timed(ctx, rec, opFT, http.MethodPost, path+"/force-terminate")
			} else {
				b.timed(ctx, rec, opStop, http.MethodPost, path+"/stop")
			}
			forceNext = !forceNext
		case "stopped", "failed":
			b.timed(ctx, rec, opStart, http.MethodPost, path+"/start")
		default:
			b.problem("reserved instance %s is %s; it is measured no more", id, state)
			return
		}
	}
}

// settle polls an instance until it is in no transitional state.
func (b *bench) settle(ctx context.Context, id string, stopped func() bool) (string, error) {
	deadline := time.Now().Add(settleBound)
	for {
		a, err := b.call(ctx, http.MethodGet, "/v1/instances/"+id, "", http.StatusOK)
		if err != nil {
			return "", err
		}
		var inst instanceRow
		if err := a.JSON(&inst); err != nil {
			return "", err
		}
		if !transitional[inst.RunState] {
			return inst.RunState, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("still %s after %s", inst.RunState, settleBound)
		}
		if stopped() {
			return inst.RunState, nil
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return "", err
		}
	}
}

// idlePhase measures REST latency with every periodic task but the
// one-query checks quiet (nexus runs with them an hour apart: see
// nexusConfig), and checks from the pass counters that none ran.
func (b *bench) idlePhase(ctx context.Context) error {
	b.watch.setPhase("idle")
	b.say("idle phase: REST latency with the background tasks quiet, %d samples of each operation", b.o.samples)
	began := time.Now()
	rec, err := b.load(ctx, "idle", func(rec *recorder) bool { return allAtLeast(rec.counts(), b.o.samples) })
	if err != nil {
		return err
	}
	b.fig.idle = phaseRecord{began: began, ended: time.Now(), requests: rec.all()}
	for _, task := range append(append([]string{}, reportedTasks...), "reincarnation", "orphan_vmms", "stop_wishes",
		"saga_reassignment", "prune_history") {
		if n := b.mon.passCount(task, time.Time{}); n > 0 {
			b.problem("%d passes of %s ran while nexus was meant to be idle", n, task)
		}
	}
	return nil
}

// restartBusy restarts nexus with the busy periods, and waits until every
// sled has heartbeated to the new process; sightings meanwhile are
// excused.
func (b *bench) restartBusy(ctx context.Context) error {
	b.watch.setPhase("restart")
	args := b.busyArgs()
	b.say("restarting nexus with the busy periods: %s", strings.Join(args, " "))
	window := b.watch.open(uuid.Nil, "nexus restart")
	b.mon.pause(ctx)
	began := time.Now()
	err := b.do(func() {
		b.nexus.Stop()
		b.nexus.Start(args...)
		b.nexus.WaitLog(nexusReady, startBound, nil)
	})
	if err != nil {
		return fmt.Errorf("restarting nexus: %w", err)
	}
	b.mon.resume()
	up := time.Now()
	bound := 30*time.Second + 3*b.heartbeatPeriod()
	if err := b.waitHeartbeatedSince(ctx, up, bound); err != nil {
		return fmt.Errorf("after nexus's restart: %w", err)
	}
	b.watch.closeAt(window, time.Now())
	b.fig.restart = time.Since(began)
	b.say("nexus restarted (pid %d) and every sled heartbeated to it, %s after the stop", b.nexus.Pid(),
		b.fig.restart.Round(time.Millisecond))
	return nil
}

// busyPhase measures REST latency while the background tasks run at
// --task-period, until each SPEC 6 task has run --busy-passes passes and
// every operation has --samples requests in all and as many that
// overlapped a pass (a p99 over 55 samples is their maximum: at 1,000
// sleds a pass is now a tenth of its period, and stop and force-terminate
// met few); then it waits for one more pass of each, so that every
// request's overlap with a pass is known.
func (b *bench) busyPhase(ctx context.Context) error {
	b.watch.setPhase("busy")
	b.say("busy phase: REST latency while inventory, zones_push, instance_watcher and instance_updater run every %s, until %d passes of each SPEC 6 task",
		b.o.taskPeriod, b.o.busyPasses)
	began := time.Now()
	profileDone := b.startProfile(ctx)
	noMetricsBound := 2*time.Duration(b.o.busyPasses+1)*b.o.taskPeriod + 30*time.Second
	rec, err := b.load(ctx, "busy", func(rec *recorder) bool {
		if !allAtLeast(rec.counts(), b.o.samples) {
			return false
		}
		if time.Since(began) > noMetricsBound && !b.mon.seenMetrics() {
			b.problem("no pass metrics from nexus %s into the busy phase: it is ended without them", noMetricsBound)
			return true
		}
		for _, task := range spec6Tasks {
			if b.mon.passCount(task, began) < uint64(b.o.busyPasses) {
				return false
			}
		}
		select {
		case <-profileDone:
		default:
			return false
		}
		// Enough requests overlapped a pass for their p99 to be one.
		return allAtLeast(b.duringCounts(rec.all(), began), b.o.samples)
	})
	if err != nil {
		return err
	}
	ended := time.Now()
	// One more pass of each SPEC 6 task, so that a pass under way at the
	// end is seen.
	bound := 3*b.o.taskPeriod + time.Minute
	if err := b.waitPasses(ctx, ended, bound); err != nil {
		b.problem("after the busy phase: %v", err)
	}
	<-profileDone
	b.fig.busy = phaseRecord{began: began, ended: ended, requests: rec.all()}
	return nil
}

// duringCounts counts the successful requests of each operation that
// overlapped a pass of a SPEC 6 task seen since began.
func (b *bench) duringCounts(reqs []request, began time.Time) map[string]int {
	var passes []pass
	for _, task := range spec6Tasks {
		passes = append(passes, b.mon.passes(task, began, time.Time{})...)
	}
	during := duringPasses(passes)
	counts := map[string]int{}
	for _, r := range reqs {
		if r.ok() && during(r) {
			counts[r.op]++
		}
	}
	return counts
}

// waitPasses waits until every SPEC 6 task has ended a pass seen after
// since.
func (b *bench) waitPasses(ctx context.Context, since time.Time, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		var waiting []string
		for _, task := range spec6Tasks {
			ended := false
			for _, p := range b.mon.passes(task, since, time.Time{}) {
				ended = ended || !p.after.Before(since)
			}
			if !ended {
				waiting = append(waiting, task)
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no pass of %v ended within %s", waiting, bound)
		}
		if err := pause(ctx, b.o.poll); err != nil {
			return err
		}
	}
}

// startProfile fetches nexus's CPU profile, --cpu-profile-time long, into
// --cpu-profile, from the start of the busy phase: nexus has just
// restarted, so the profile holds the first pass of each task, which
// meets cold connections to every sled and is the slowest. The harness's
// own profile (its sled-agents, the other side of every call) goes to
// --cpu-profile with ".harness" added, over the same time. With --trace,
// nexus's execution trace over the same time goes there too, to tell what
// the passes wait on (go tool trace -pprof=sync|net|sched). The channel
// closes once all are written (at once with neither flag).
func (b *bench) startProfile(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if b.o.cpuProfile == "" && b.o.trace == "" {
		close(done)
		return done
	}
	secs := int(b.o.cpuProfileTime.Round(time.Second) / time.Second)
	var wg sync.WaitGroup
	if b.o.trace != "" {
		b.record(ctx, &wg, secs, recording{what: "execution trace", file: b.o.trace, endpoint: "trace",
			start: trace.Start, stop: trace.Stop, see: "go tool trace -pprof=sync"}, func(int64, error) {})
	}
	if b.o.cpuProfile != "" {
		b.record(ctx, &wg, secs, recording{what: "CPU profile", file: b.o.cpuProfile, endpoint: "profile",
			start: pprof.StartCPUProfile, stop: pprof.StopCPUProfile, see: "go tool pprof -top"}, func(n int64, err error) {
			if err != nil {
				b.fig.profileErr = err.Error()
				return
			}
			b.fig.profileBytes = n
		})
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// recording is a record of one kind taken of both sides over the same
// time: nexus's, fetched from its pprof listener into file, and the
// harness's own (its sled-agents), into file with ".harness" added.
type recording struct {
	what, file string
	endpoint   string // under /debug/pprof/
	start      func(io.Writer) error
	stop       func()
	see        string // the command that reads it
}

// record starts the harness's side of r at once and fetches nexus's, secs
// long, in the background (counted in wg); done gets what nexus's
// fetch wrote.
func (b *bench) record(ctx context.Context, wg *sync.WaitGroup, secs int, r recording, done func(n int64, err error)) {
	harness, err := os.Create(r.file + ".harness")
	if err == nil {
		err = r.start(harness)
	}
	if err != nil {
		b.problem("%s of the harness: %v", r.what, err)
		harness = nil
	}
	wg.Go(func() {
		if harness != nil {
			defer func() {
				r.stop()
				harness.Close()
			}()
		}
		n, err := b.fetchDebug(ctx, fmt.Sprintf("%s?seconds=%d", r.endpoint, secs), r.file)
		if err != nil {
			b.problem("%s of nexus: %v", r.what, err)
		} else {
			b.say("%s of nexus (the busy phase's first %ds) written to %s, and the harness's to %s.harness; see them with: %s %s",
				r.what, secs, r.file, r.file, r.see, r.file)
		}
		done(n, err)
	})
}

// fetchDebug writes what nexus's /debug/pprof/<what> answers into file.
func (b *bench) fetchDebug(ctx context.Context, what, file string) (int64, error) {
	u := fmt.Sprintf("%s/debug/pprof/%s", b.nexus.MetricsURL(), what)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Timeout: b.o.cpuProfileTime + time.Minute}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("GET %s: %s %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	f, err := os.Create(file)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

func allAtLeast(ok map[string]int, n int) bool {
	for _, op := range operations {
		if ok[op] < n {
			return false
		}
	}
	return true
}

// latencies summarizes one operation's successful requests.
type latencies struct {
	N      int     `json:"n"`
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	Errors int     `json:"errors"`
	// FirstError is the first failed request's answer.
	FirstError string `json:"first_error,omitempty"`
}

// summarize is the latencies of the requests of op that keep says so.
func summarize(reqs []request, op string, keep func(request) bool) latencies {
	var ds []time.Duration
	var l latencies
	for _, r := range reqs {
		if r.op != op || (keep != nil && !keep(r)) {
			continue
		}
		if !r.ok() {
			l.Errors++
			if l.FirstError == "" {
				l.FirstError = r.err
			}
			continue
		}
		ds = append(ds, r.took())
	}
	l.N = len(ds)
	if l.N == 0 {
		return l
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(ds))+0.999999) - 1 // nearest rank
		return ms(ds[min(max(i, 0), len(ds)-1)])
	}
	l.P50ms, l.P99ms, l.MaxMs = at(0.50), at(0.99), ms(ds[len(ds)-1])
	return l
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// duringPasses reports whether a request overlapped a pass of a SPEC 6
// task, as the readings place them.
func duringPasses(passes []pass) func(request) bool {
	return func(r request) bool {
		for _, p := range passes {
			if !r.end.Before(p.lo) && !r.start.After(p.hi) {
				return true
			}
		}
		return false
	}
}

// heartbeatPeriod is the sleds' heartbeat period.
func (b *bench) heartbeatPeriod() time.Duration {
	if len(b.agents) > 0 {
		return time.Duration(b.agents[0].Config.HeartbeatPeriod)
	}
	return 2 * time.Second
}
