package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/rackplane/rackplane/services/racktest"
)

// The background tasks the report follows, named as in
// services/nexus/server.go.
const (
	taskInventory       = "inventory"
	taskZonesPush       = "zones_push"
	taskInstanceWatcher = "instance_watcher"
	taskInstanceUpdater = "instance_updater"
	taskSledLiveness    = "sled_liveness"
)

var (
	// reportedTasks are the passes the report lists.
	reportedTasks = []string{taskInventory, taskZonesPush, taskInstanceWatcher, taskInstanceUpdater, taskSledLiveness}
	// spec6Tasks are the passes SPEC 6 bounds, and "during passes" means
	// during one of theirs.
	spec6Tasks = []string{taskInventory, taskZonesPush, taskInstanceWatcher}
)

// nexus's metrics the harness reads.
const (
	metricPassDuration = "nexus_background_task_duration_seconds"
	metricPassLast     = "nexus_background_task_last_duration_seconds"
	metricPassItems    = "nexus_background_task_last_items"
	metricGoroutines   = "go_goroutines"
)

// bucket is one cumulative histogram bucket.
type bucket struct {
	le    float64
	count uint64
}

// taskSnap is one task's pass metrics at one reading.
type taskSnap struct {
	count, errors uint64
	sum           float64
	last, items   float64
	hasLast       bool
	buckets       []bucket // cumulative, both outcomes added, by le
}

// snap is one reading of nexus: its metrics and its memory.
type snap struct {
	at         time.Time
	run        int // which nexus process: 0 idle, 1 busy
	goroutines float64
	rss, hwm   int64 // bytes
	tasks      map[string]taskSnap
}

// monitor reads nexus's metrics and /proc/<pid>/status every --poll.
type monitor struct {
	b *bench

	pollMu sync.Mutex // held during a reading; pause holds it too
	mu     sync.Mutex
	paused bool
	run    int
	snaps  []snap
	// Per run: the highest VmHWM and go_goroutines read.
	peakHWM        map[int]int64
	peakGoroutines map[int]float64
	errors         int
	lastErr        string
	stopped        bool
}

func newMonitor(b *bench) *monitor {
	return &monitor{b: b, peakHWM: map[int]int64{}, peakGoroutines: map[int]float64{}}
}

func (m *monitor) loop(ctx context.Context) {
	t := time.NewTicker(m.b.o.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		stopped := m.stopped
		m.mu.Unlock()
		if stopped {
			return
		}
		m.pollOnce(ctx)
	}
}

// pollOnce takes one reading, unless paused.
func (m *monitor) pollOnce(ctx context.Context) {
	m.pollMu.Lock()
	defer m.pollMu.Unlock()
	m.mu.Lock()
	paused, run := m.paused, m.run
	m.mu.Unlock()
	if paused {
		return
	}
	s, err := m.read(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.errors++
		m.lastErr = err.Error()
		return
	}
	s.run = run
	m.snaps = append(m.snaps, s)
	m.peakHWM[run] = max(m.peakHWM[run], s.hwm)
	m.peakGoroutines[run] = max(m.peakGoroutines[run], s.goroutines)
}

// pause stops the readings (the nexus process is about to go) after a last
// one; resume starts them again for the next process.
func (m *monitor) pause(ctx context.Context) {
	m.pollOnce(ctx)
	m.pollMu.Lock()
	m.mu.Lock()
	m.paused = true
	m.mu.Unlock()
	m.pollMu.Unlock()
}

func (m *monitor) resume() {
	m.mu.Lock()
	m.paused = false
	m.run++
	m.mu.Unlock()
}

func (m *monitor) stop(ctx context.Context) {
	m.pollOnce(ctx)
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
}

// metricsReadBound bounds one read of nexus's metrics: a nexus that hangs
// must not stop the poller.
const metricsReadBound = 30 * time.Second

// read reads nexus's metrics and its memory.
func (m *monitor) read(ctx context.Context) (snap, error) {
	s := snap{at: time.Now(), tasks: map[string]taskSnap{}}
	rss, hwm, err := procMemory(m.b.nexus.Pid())
	if err != nil {
		return s, err
	}
	s.rss, s.hwm = rss, hwm
	scrapeCtx, cancel := context.WithTimeout(ctx, metricsReadBound)
	defer cancel()
	families, err := racktest.ScrapeMetrics(scrapeCtx, m.b.nexus.MetricsURL())
	if err != nil {
		return s, fmt.Errorf("nexus's metrics: %w", err)
	}
	if f := families[metricGoroutines]; f != nil && len(f.GetMetric()) > 0 {
		s.goroutines = f.GetMetric()[0].GetGauge().GetValue()
	}
	taskOf := func(pairs []*dto.LabelPair) (task, outcome string) {
		for _, p := range pairs {
			switch p.GetName() {
			case "task":
				task = p.GetValue()
			case "outcome":
				outcome = p.GetValue()
			}
		}
		return task, outcome
	}
	if f := families[metricPassDuration]; f != nil {
		for _, mt := range f.GetMetric() {
			task, outcome := taskOf(mt.GetLabel())
			h := mt.GetHistogram()
			t := s.tasks[task]
			t.count += h.GetSampleCount()
			if outcome == "error" {
				t.errors += h.GetSampleCount()
			}
			t.sum += h.GetSampleSum()
			t.buckets = addBuckets(t.buckets, h.GetBucket(), h.GetSampleCount())
			s.tasks[task] = t
		}
	}
	if f := families[metricPassLast]; f != nil {
		for _, mt := range f.GetMetric() {
			task, _ := taskOf(mt.GetLabel())
			t := s.tasks[task]
			t.last, t.hasLast = mt.GetGauge().GetValue(), true
			s.tasks[task] = t
		}
	}
	if f := families[metricPassItems]; f != nil {
		for _, mt := range f.GetMetric() {
			task, _ := taskOf(mt.GetLabel())
			t := s.tasks[task]
			t.items = mt.GetGauge().GetValue()
			s.tasks[task] = t
		}
	}
	return s, nil
}

// addBuckets adds a histogram's cumulative buckets (and its +Inf bucket,
// the sample count, when they lack it) to sum.
func addBuckets(sum []bucket, add []*dto.Bucket, total uint64) []bucket {
	byLE := map[float64]uint64{}
	for _, b := range sum {
		byLE[b.le] = b.count
	}
	inf := false
	for _, b := range add {
		byLE[b.GetUpperBound()] += b.GetCumulativeCount()
		inf = inf || math.IsInf(b.GetUpperBound(), 1)
	}
	if !inf { // the text format lists +Inf; the sample count is its count
		byLE[math.Inf(1)] += total
	}
	out := make([]bucket, 0, len(byLE))
	for le, c := range byLE {
		out = append(out, bucket{le: le, count: c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].le < out[j].le })
	return out
}

// procMemory reads a process's VmRSS and VmHWM, in bytes.
func procMemory(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc/%d/status: %q", pid, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status has no VmRSS or VmHWM", pid)
	}
	return rss, hwm, sc.Err()
}

// pass is a task's pass (or passes) seen between two readings: it ended
// by hi, and began no earlier than lo (the earlier reading minus the time
// the passes in between took).
type pass struct {
	task   string
	lo, hi time.Time
	after  time.Time // the earlier reading: every pass counted ended after it
	n      uint64    // passes ended between the two readings
	last   float64   // seconds, the last pass's (the gauge)
	items  float64
}

// passes lists the passes of task seen by readings between from and to
// (zero to: up to now).
func (m *monitor) passes(task string, from, to time.Time) []pass {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []pass
	for i := 1; i < len(m.snaps); i++ {
		prev, cur := m.snaps[i-1], m.snaps[i]
		if prev.run != cur.run || cur.at.Before(from) || (!to.IsZero() && cur.at.After(to)) {
			continue
		}
		p, c := prev.tasks[task], cur.tasks[task]
		if c.count <= p.count {
			continue
		}
		took := time.Duration((c.sum - p.sum) * float64(time.Second))
		out = append(out, pass{task: task, lo: prev.at.Add(-took), hi: cur.at, after: prev.at, n: c.count - p.count, last: c.last, items: c.items})
	}
	return out
}

// passCount is how many passes of task readings saw end since from.
func (m *monitor) passCount(task string, from time.Time) uint64 {
	var n uint64
	for _, p := range m.passes(task, from, time.Time{}) {
		n += p.n
	}
	return n
}

// histogram is the change of task's pass histogram between the readings
// at or before from and to, of the same nexus process: the passes that
// ended in between. A window that begins before the process's first
// reading counts from zero.
func (m *monitor) histogram(task string, from, to time.Time) (count, errors uint64, buckets []bucket) {
	m.mu.Lock()
	defer m.mu.Unlock()
	end := -1
	for i, s := range m.snaps {
		if !s.at.After(to) {
			end = i
		}
	}
	if end < 0 {
		return 0, 0, nil
	}
	last := m.snaps[end].tasks[task]
	var first taskSnap
	for i := end; i >= 0 && m.snaps[i].run == m.snaps[end].run; i-- {
		if !m.snaps[i].at.After(from) {
			first = m.snaps[i].tasks[task]
			break
		}
	}
	prior := map[float64]uint64{}
	for _, b := range first.buckets {
		prior[b.le] = b.count
	}
	for _, b := range last.buckets {
		buckets = append(buckets, bucket{le: b.le, count: b.count - prior[b.le]})
	}
	return last.count - first.count, last.errors - first.errors, buckets
}

// quantile is the q-quantile of a cumulative histogram, interpolated in
// its bucket as Prometheus's histogram_quantile does.
func quantile(q float64, buckets []bucket) float64 {
	if len(buckets) == 0 || buckets[len(buckets)-1].count == 0 {
		return math.NaN()
	}
	total := buckets[len(buckets)-1].count
	rank := q * float64(total)
	lower, below := 0.0, uint64(0)
	for _, b := range buckets {
		if float64(b.count) >= rank {
			if math.IsInf(b.le, 1) {
				return lower
			}
			if b.count == below {
				return b.le
			}
			return lower + (b.le-lower)*(rank-float64(below))/float64(b.count-below)
		}
		lower, below = b.le, b.count
	}
	return lower
}

// maxBound is the upper bound of the highest bucket a pass fell in: every
// pass took at most that long (+Inf when one outlasted the last bound).
func maxBound(buckets []bucket) float64 {
	if len(buckets) == 0 {
		return math.NaN()
	}
	total := buckets[len(buckets)-1].count
	if total == 0 {
		return math.NaN()
	}
	for _, b := range buckets {
		if b.count == total {
			return b.le
		}
	}
	return math.Inf(1)
}

// peaks are nexus's highest VmHWM and goroutines over its processes, and
// the last reading's.
func (m *monitor) peaks() (hwm map[int]int64, goroutines map[int]float64, last snap, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	hwm, goroutines = map[int]int64{}, map[int]float64{}
	for k, v := range m.peakHWM {
		hwm[k] = v
	}
	for k, v := range m.peakGoroutines {
		goroutines[k] = v
	}
	if len(m.snaps) > 0 {
		return hwm, goroutines, m.snaps[len(m.snaps)-1], true
	}
	return hwm, goroutines, snap{}, false
}

// seenMetrics reports whether nexus serves the pass metrics at all.
func (m *monitor) seenMetrics() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.snaps {
		if len(s.tasks) > 0 {
			return true
		}
	}
	return false
}
