package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
)

// Bounds of SPEC 6's 1,000-sled line.
const (
	passBound        = 5.0     // seconds, each of inventory, zones push, instance watcher
	ratioBound       = 5.0     // REST p99 during passes over its idle p99
	rssBound         = 1 << 30 // nexus's resident memory
	detectBound      = 10.0    // seconds until a stopped sled is shown unreachable
	minRatioSamples  = 20      // below this, a p99 is not judged
	specSleds        = 1000
	specInstances    = 10000
	verdictPass      = "PASS"
	verdictFail      = "FAIL"
	verdictNotJudged = "N/A"
)

// phaseRecord is a measured phase's time and requests.
type phaseRecord struct {
	began, ended time.Time
	requests     []request
}

// figures are what the run measured, as it goes.
type figures struct {
	database                   string
	setup, rackSetup           time.Duration
	lostSled                   string
	zpools                     map[uuid.UUID][]string
	createCount, createRetries int
	createTime, runningTime    time.Duration
	firstRetry                 string
	idle, busy                 phaseRecord
	restart                    time.Duration
	loss                       sledLossFigures
	lossBegan, lossEnded       time.Time
	db                         *databaseFigures
	profileBytes               int64
	profileErr                 string
}

// falseReports are what the sled list polls saw.
type falseReports struct {
	Count      int           `json:"count"`
	Polls      int           `json:"polls"`
	PollErrors int           `json:"poll_errors"`
	Reports    []falseReport `json:"reports,omitempty"`
	// Excused counts sightings of unreachable sleds the harness caused:
	// the lost sled while stopped, any sled while nexus restarted.
	Excused                  map[string]int `json:"excused"`
	PollsWithoutReachability int            `json:"polls_without_reachability"`
	PollsMissingSleds        int            `json:"polls_missing_sleds"`
	LastPollError            string         `json:"last_poll_error,omitempty"`
}

// Report is every figure of a run: printed as text, and written as JSON
// with --json.
type Report struct {
	Sleds     int `json:"sleds"`
	Instances int `json:"instances"`
	Reserved  int `json:"reserved_instances"`
	Setup     struct {
		Database                string  `json:"database"`
		Backend                 string  `json:"backend"`
		LostSledProcess         bool    `json:"lost_sled_is_a_process"`
		SetupSeconds            float64 `json:"setup_seconds"`
		RackSetupSeconds        float64 `json:"rack_setup_seconds"`
		CreateSeconds           float64 `json:"create_seconds"`
		CreatePerSecond         float64 `json:"create_per_second"`
		AllRunningSeconds       float64 `json:"all_running_seconds"`
		CreateRetries           int     `json:"create_retries"`
		FirstRetry              string  `json:"first_retry,omitempty"`
		TaskPeriodSeconds       float64 `json:"busy_task_period_seconds"`
		HeartbeatPeriodSeconds  float64 `json:"heartbeat_period_seconds"`
		HeartbeatTimeoutSeconds float64 `json:"heartbeat_timeout_seconds"`
		NexusRestartSeconds     float64 `json:"nexus_restart_seconds"`
		OpenFilesLimit          uint64  `json:"open_files_limit"`
		IdleSeconds             float64 `json:"idle_phase_seconds"`
		BusySeconds             float64 `json:"busy_phase_seconds"`
	} `json:"setup"`
	Passes       map[string]*passFigures `json:"passes"`
	REST         map[string]*opFigures   `json:"rest"`
	Nexus        nexusFigures            `json:"nexus"`
	Database     *databaseFigures        `json:"database"`
	SledLoss     sledLossFigures         `json:"sled_loss"`
	FalseReports falseReports            `json:"false_reports"`
	CPUProfile   *profileFigures         `json:"cpu_profile,omitempty"`
	Targets      []target                `json:"targets"`
	Problems     []string                `json:"problems"`
}

// passFigures are one task's passes, read from nexus's metrics.
type passFigures struct {
	IdlePasses uint64     `json:"idle_passes"`
	Busy       passWindow `json:"busy"`
	SledLoss   passWindow `json:"sled_loss"`
}

// passWindow is a task's passes that ended in a phase: from the gauges
// (read at every poll: the last pass's time and items) and from the
// histogram's change over the phase.
type passWindow struct {
	Passes      uint64   `json:"passes"`
	Errors      uint64   `json:"errors"`
	LastSeconds *float64 `json:"last_seconds"`
	MaxSeconds  *float64 `json:"max_seconds"`
	LastItems   *float64 `json:"last_items"`
	// Seconds are the passes' durations in the order they ended, each as
	// the gauge read after it (a reading that saw several ended passes
	// knows only the last).
	Seconds []float64 `json:"seconds"`
	// Histogram: passes counted, their median (interpolated in its
	// bucket) and the bound of the highest bucket one fell in.
	HistogramCount      uint64   `json:"histogram_count"`
	HistogramP50Seconds *float64 `json:"histogram_p50_seconds"`
	HistogramMaxAtMost  *float64 `json:"histogram_max_at_most_seconds"`
}

// opFigures are one REST operation's latencies.
type opFigures struct {
	Idle latencies `json:"idle"`
	// Busy is every request of the busy phase; DuringPasses those that
	// overlapped a pass of inventory, zones_push or instance_watcher.
	Busy         latencies `json:"busy"`
	DuringPasses latencies `json:"during_passes"`
	// Ratio is DuringPasses.P99 over Idle.P99.
	Ratio *float64 `json:"p99_ratio"`
}

type nexusFigures struct {
	Pid int `json:"pid"`
	// PeakRSSBytes is the highest VmHWM of nexus's processes (idle, busy).
	PeakRSSBytes     int64   `json:"peak_rss_bytes"`
	PeakRSSIdleBytes int64   `json:"peak_rss_idle_process_bytes"`
	PeakRSSBusyBytes int64   `json:"peak_rss_busy_process_bytes"`
	RSSBytes         int64   `json:"rss_bytes"`
	PeakGoroutines   float64 `json:"peak_goroutines"`
	Goroutines       float64 `json:"goroutines"`
	Readings         int     `json:"metrics_readings"`
	ReadErrors       int     `json:"metrics_read_errors"`
	LastReadError    string  `json:"last_read_error,omitempty"`
}

type profileFigures struct {
	File  string `json:"file"`
	Bytes int64  `json:"bytes"`
	Error string `json:"error,omitempty"`
}

// target is one SPEC 6 line (or issue 16's) as measured.
type target struct {
	Name     string   `json:"name"`
	Bound    string   `json:"bound"`
	Value    *float64 `json:"value"`
	Measured string   `json:"measured"`
	Verdict  string   `json:"verdict"`
}

// num is x, or nil when it is no number (no data).
func num(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return &x
}

// stopWatching ends the sled list polls and takes nexus's last reading.
func (b *bench) stopWatching() {
	b.watch.stop()
	b.mon.stop(context.Background())
}

// passWindow is task's passes seen between from and to.
func (b *bench) passWindow(task string, from, to time.Time) passWindow {
	var w passWindow
	maxSeen := math.NaN()
	for _, p := range b.mon.passes(task, from, to) {
		w.Passes += p.n
		maxSeen = math.Max(nanTo(maxSeen, p.last), p.last)
		w.LastSeconds, w.LastItems = num(p.last), num(p.items)
		w.Seconds = append(w.Seconds, p.last)
	}
	w.MaxSeconds = num(maxSeen)
	count, errs, buckets := b.mon.histogram(task, from, to)
	w.HistogramCount, w.Errors = count, errs
	w.HistogramP50Seconds, w.HistogramMaxAtMost = num(quantile(0.5, buckets)), num(maxBound(buckets))
	return w
}

func nanTo(x, alt float64) float64 {
	if math.IsNaN(x) {
		return alt
	}
	return x
}

// report gathers every figure and judges the targets.
func (b *bench) report() *Report {
	r := &Report{Sleds: b.o.sleds, Instances: b.o.instances, Reserved: b.o.reserved, Passes: map[string]*passFigures{},
		REST: map[string]*opFigures{}}
	f := &b.fig
	s := &r.Setup
	s.Database, s.Backend, s.LostSledProcess = f.database, string(b.backend), true
	s.SetupSeconds, s.RackSetupSeconds = f.setup.Seconds(), f.rackSetup.Seconds()
	s.CreateSeconds, s.AllRunningSeconds = f.createTime.Seconds(), f.runningTime.Seconds()
	if f.createTime > 0 {
		s.CreatePerSecond = float64(f.createCount) / f.createTime.Seconds()
	}
	s.CreateRetries, s.FirstRetry = f.createRetries, f.firstRetry
	s.TaskPeriodSeconds, s.HeartbeatPeriodSeconds = b.o.taskPeriod.Seconds(), b.heartbeatPeriod().Seconds()
	s.HeartbeatTimeoutSeconds, s.NexusRestartSeconds = b.heartbeatTimeout().Seconds(), f.restart.Seconds()
	s.OpenFilesLimit = b.fileCap
	s.IdleSeconds, s.BusySeconds = f.idle.ended.Sub(f.idle.began).Seconds(), f.busy.ended.Sub(f.busy.began).Seconds()

	for _, task := range reportedTasks {
		r.Passes[task] = &passFigures{
			IdlePasses: b.mon.passCount(task, time.Time{}) - b.mon.passCount(task, f.idle.ended),
			Busy:       b.passWindow(task, f.busy.began, f.lossBegan),
			SledLoss:   b.passWindow(task, f.lossBegan, f.lossEnded),
		}
	}
	var busyPasses []pass
	for _, task := range spec6Tasks {
		busyPasses = append(busyPasses, b.mon.passes(task, f.busy.began, time.Time{})...)
	}
	during := duringPasses(busyPasses)
	for _, op := range operations {
		o := &opFigures{Idle: summarize(f.idle.requests, op, nil), Busy: summarize(f.busy.requests, op, nil),
			DuringPasses: summarize(f.busy.requests, op, during)}
		if o.Idle.N > 0 && o.DuringPasses.N > 0 && o.Idle.P99ms > 0 {
			o.Ratio = num(o.DuringPasses.P99ms / o.Idle.P99ms)
		}
		r.REST[op] = o
	}

	hwm, goroutines, last, ok := b.mon.peaks()
	n := &r.Nexus
	n.Pid = b.nexus.Pid()
	n.PeakRSSIdleBytes, n.PeakRSSBusyBytes = hwm[0], hwm[1]
	n.PeakRSSBytes = max(hwm[0], hwm[1])
	n.PeakGoroutines = max(goroutines[0], goroutines[1])
	if ok {
		n.RSSBytes, n.Goroutines = last.rss, last.goroutines
	}
	b.mon.mu.Lock()
	n.Readings, n.ReadErrors, n.LastReadError = len(b.mon.snaps), b.mon.errors, b.mon.lastErr
	b.mon.mu.Unlock()
	r.Database = f.db
	r.SledLoss = f.loss
	r.FalseReports = b.watch.figures()
	if b.o.cpuProfile != "" {
		r.CPUProfile = &profileFigures{File: b.o.cpuProfile, Bytes: f.profileBytes, Error: f.profileErr}
	}
	if !b.mon.seenMetrics() {
		b.problem("nexus serves no %s, %s or %s: its pass durations are not measured", metricPassDuration, metricPassLast, metricPassItems)
	}
	if r.FalseReports.PollsWithoutReachability > 0 {
		b.problem("%d sled list polls showed a sled without \"reachability\"", r.FalseReports.PollsWithoutReachability)
	}
	r.Targets = b.targets(r)
	b.mu.Lock()
	r.Problems = append([]string{}, b.problems...)
	b.mu.Unlock()
	return r
}

// targets judges SPEC 6's 1,000-sled line (and issue 16's sled loss) on
// what was measured.
func (b *bench) targets(r *Report) []target {
	var out []target
	judge := func(name, bound string, value *float64, measured string, ok func(float64) bool) {
		t := target{Name: name, Bound: bound, Value: value, Measured: measured, Verdict: verdictNotJudged}
		if value != nil {
			t.Verdict = verdictFail
			if ok(*value) {
				t.Verdict = verdictPass
			}
		}
		out = append(out, t)
	}
	for _, task := range spec6Tasks {
		w := r.Passes[task].Busy
		measured := "no pass seen"
		if w.MaxSeconds != nil {
			measured = fmt.Sprintf("max %.3fs over %d passes (last %.3fs, %s items)", *w.MaxSeconds, w.Passes, deref(w.LastSeconds), fnum(w.LastItems))
		}
		judge(task+" pass", "<= 5 s", w.MaxSeconds, measured, func(v float64) bool { return v <= passBound })
	}
	for _, op := range operations {
		o := r.REST[op]
		value := o.Ratio
		measured := fmt.Sprintf("p99 %.2fms during passes (n=%d) / %.2fms idle (n=%d)", o.DuringPasses.P99ms, o.DuringPasses.N, o.Idle.P99ms, o.Idle.N)
		if o.DuringPasses.N < minRatioSamples || o.Idle.N < minRatioSamples {
			measured += fmt.Sprintf("; fewer than %d samples: not judged", minRatioSamples)
			value = nil
		}
		if o.Ratio != nil {
			measured = fmt.Sprintf("%.2fx: ", *o.Ratio) + measured
		}
		judge("REST "+op+" p99 during passes", "<= 5 x idle p99", value, measured, func(v float64) bool { return v <= ratioBound })
	}
	rss := num(float64(r.Nexus.PeakRSSBytes))
	if r.Nexus.PeakRSSBytes == 0 {
		rss = nil
	}
	judge("nexus resident memory (peak VmHWM)", "<= 1 GiB", rss, mib(r.Nexus.PeakRSSBytes),
		func(v float64) bool { return v <= rssBound })
	l := r.SledLoss
	detected := num(l.DetectedSeconds)
	if l.DetectedSeconds == 0 {
		detected = nil
	}
	judge("stopped sled shown unreachable", "<= 10 s", detected, fmt.Sprintf("%.2fs (after %.2fs; read every %.2fs)", l.DetectedSeconds, l.DetectedAfterSeconds, l.PollSeconds),
		func(v float64) bool { return v <= detectBound })
	newVMMs := num(float64(l.NewVMMsOnLostSled + l.NewOnLostSled))
	if l.NewInstances == 0 {
		newVMMs = nil
	}
	judge("no new VMM placed on the unreachable sled", "0", newVMMs,
		fmt.Sprintf("%d new VMMs on it; %d of %d new instances placed on it", l.NewVMMsOnLostSled, l.NewOnLostSled, l.NewInstances),
		func(v float64) bool { return v == 0 })
	fr := r.FalseReports
	falseCount := num(float64(fr.Count))
	if fr.Polls == 0 || fr.PollsWithoutReachability > 0 {
		falseCount = nil
	}
	judge("false reports (healthy sleds shown unreachable)", "0", falseCount, fmt.Sprintf("%d in %d polls of the sled list", fr.Count, fr.Polls),
		func(v float64) bool { return v == 0 })
	// Issue 16's, beyond SPEC 6.
	shown := num(float64(l.InstancesShownUnreachable))
	if l.InstancesChecked == 0 {
		shown = nil
	}
	judge("issue 16: its instances show sled_reachability unreachable", fmt.Sprintf("%d of %d", l.InstancesChecked, l.InstancesChecked), shown,
		fmt.Sprintf("%d of %d viewed", l.InstancesShownUnreachable, l.InstancesChecked),
		func(v float64) bool { return int(v) == l.InstancesChecked })
	back := num(l.BackSeconds)
	if l.BackSeconds == 0 {
		back = nil
	}
	judge("issue 16: back within one heartbeat", fmt.Sprintf("<= %.1f s", l.HeartbeatPeriodSeconds), back, fmt.Sprintf("%.2fs after SIGCONT (after %.2fs)", l.BackSeconds, l.BackAfterSeconds),
		func(v float64) bool { return v <= l.HeartbeatPeriodSeconds })
	return out
}

func deref(x *float64) float64 {
	if x == nil {
		return math.NaN()
	}
	return *x
}

func fnum(x *float64) string {
	if x == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", *x)
}

func fsec(x *float64) string {
	if x == nil {
		return "-"
	}
	return fmt.Sprintf("%.3fs", *x)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// print writes the report as text.
func (r *Report) print(out io.Writer) {
	s := r.Setup
	fmt.Fprintf(out, "\nscalebench: one nexus with %d sleds and %d instances", r.Sleds, r.Instances)
	if r.Sleds != specSleds || r.Instances != specInstances {
		fmt.Fprintf(out, " (SPEC 6 states its targets for %d and %d: these verdicts are this size's)", specSleds, specInstances)
	}
	fmt.Fprintf(out, "\n  database: %s\n", s.Database)
	fmt.Fprintf(out, "  nexus: one process, the real binary (pid %d); %d real sled-agents in the harness's process, 1 (the sled lost) a process of its own\n",
		r.Nexus.Pid, r.Sleds-1)
	fmt.Fprintf(out, "  sleds heartbeat every %.1fs; nexus's heartbeat timeout %.1fs; busy phase task period %.1fs; open files limit %d\n",
		s.HeartbeatPeriodSeconds, s.HeartbeatTimeoutSeconds, s.TaskPeriodSeconds, s.OpenFilesLimit)
	fmt.Fprintf(out, "  set-up %.1fs (rack setup %.1fs); %d instances created in %.1fs (%.1f/s), all running after %.1fs; %d creates sent again after 500/503\n",
		s.SetupSeconds, s.RackSetupSeconds, r.Instances, s.CreateSeconds, s.CreatePerSecond, s.AllRunningSeconds, s.CreateRetries)
	if s.FirstRetry != "" {
		fmt.Fprintf(out, "    first: %s\n", s.FirstRetry)
	}
	fmt.Fprintf(out, "  idle phase %.1fs; nexus restarted with the busy periods in %.1fs; busy phase %.1fs\n",
		s.IdleSeconds, s.NexusRestartSeconds, s.BusySeconds)

	fmt.Fprintf(out, "\nBackground passes (nexus's metrics: gauges read every poll, histogram over the phase)\n")
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  task\tidle passes\tbusy passes\terrors\tlast\tmax\thist p50\thist max <=\tlast items\t| sled loss passes\tmax\t\n")
	for _, task := range reportedTasks {
		p := r.Passes[task]
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t| %d\t%s\t\n", task, p.IdlePasses, p.Busy.Passes, p.Busy.Errors,
			fsec(p.Busy.LastSeconds), fsec(p.Busy.MaxSeconds), fsec(p.Busy.HistogramP50Seconds), fsec(p.Busy.HistogramMaxAtMost),
			fnum(p.Busy.LastItems), p.SledLoss.Passes, fsec(p.SledLoss.MaxSeconds))
	}
	tw.Flush()
	for _, task := range spec6Tasks {
		secs := make([]string, len(r.Passes[task].Busy.Seconds))
		for i, v := range r.Passes[task].Busy.Seconds {
			secs[i] = fmt.Sprintf("%.2f", v)
		}
		fmt.Fprintf(out, "  %s busy passes in order, s: %s\n", task, strings.Join(secs, " "))
	}

	fmt.Fprintf(out, "\nREST latency, ms (idle: no pass runs; busy: the whole busy phase; during passes: requests overlapping a pass of inventory,\n"+
		"zones_push or instance_watcher, each pass taken to span from the metrics reading before it ended, less its duration, to the one after)\n")
	tw = tabwriter.NewWriter(out, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  operation\tidle n\tp50\tp99\t| busy n\tp50\tp99\t| during n\tp50\tp99\t| p99 ratio\terrors\t\n")
	for _, op := range operations {
		o := r.REST[op]
		ratio := "-"
		if o.Ratio != nil {
			ratio = fmt.Sprintf("%.2fx", *o.Ratio)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%.2f\t%.2f\t| %d\t%.2f\t%.2f\t| %d\t%.2f\t%.2f\t| %s\t%d\t\n", op, o.Idle.N, o.Idle.P50ms, o.Idle.P99ms,
			o.Busy.N, o.Busy.P50ms, o.Busy.P99ms, o.DuringPasses.N, o.DuringPasses.P50ms, o.DuringPasses.P99ms, ratio,
			o.Idle.Errors+o.Busy.Errors)
	}
	tw.Flush()
	for _, op := range operations {
		o := r.REST[op]
		for _, l := range []latencies{o.Idle, o.Busy} {
			if l.FirstError != "" {
				fmt.Fprintf(out, "  %s: %d failed; first: %s\n", op, l.Errors, l.FirstError)
				break
			}
		}
	}

	n := r.Nexus
	fmt.Fprintf(out, "\nNexus\n  peak resident memory (VmHWM): %s (idle process %s, busy process %s); resident now %s\n",
		mib(n.PeakRSSBytes), mib(n.PeakRSSIdleBytes), mib(n.PeakRSSBusyBytes), mib(n.RSSBytes))
	fmt.Fprintf(out, "  goroutines (go_goroutines): peak %.0f, now %.0f; %d readings, %d failed\n", n.PeakGoroutines, n.Goroutines, n.Readings, n.ReadErrors)

	if d := r.Database; d != nil {
		fmt.Fprintf(out, "\nDatabase (%s): %s", d.Backend, mib(d.SizeBytes))
		if len(d.Files) > 0 {
			var files []string
			for _, name := range sortedKeys(d.Files) {
				files = append(files, fmt.Sprintf("%s %s", name, mib(d.Files[name])))
			}
			fmt.Fprintf(out, " (%s)", strings.Join(files, ", "))
		}
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 2, 8, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "  table\trows\t")
		if d.TableBytes != nil {
			fmt.Fprintf(tw, "size\t")
		}
		fmt.Fprintln(tw)
		for _, t := range sortedKeys(d.Rows) {
			fmt.Fprintf(tw, "  %s\t%d\t", t, d.Rows[t])
			if d.TableBytes != nil {
				fmt.Fprintf(tw, "%s\t", mib(d.TableBytes[t]))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}

	l := r.SledLoss
	fmt.Fprintf(out, "\nSled loss (sled %s, a sled-agent process, SIGSTOPped while it ran %d instances)\n", l.Sled, l.RunningInstances)
	fmt.Fprintf(out, "  shown unreachable %.2fs after it stopped (still reachable in the list read %.2fs after; the list read every %.2fs)\n",
		l.DetectedSeconds, l.DetectedAfterSeconds, l.PollSeconds)
	fmt.Fprintf(out, "  %d of %d of its instances viewed showed sled_reachability \"unreachable\"\n", l.InstancesShownUnreachable, l.InstancesChecked)
	for _, a := range l.InstanceAnswers {
		fmt.Fprintf(out, "    %s\n", a)
	}
	fmt.Fprintf(out, "  %d instances created meanwhile, VMMs by sled %v: %d on the lost sled; %d new VMMs on it from its stop to its resume\n",
		l.NewInstances, l.NewPlacement, l.NewOnLostSled, l.NewVMMsOnLostSled)
	fmt.Fprintf(out, "  shown reachable %.2fs after SIGCONT (still unreachable in the list read %.2fs after; heartbeat period %.1fs); then %d of the %d instances showed \"reachable\"\n",
		l.BackSeconds, l.BackAfterSeconds, l.HeartbeatPeriodSeconds, l.InstancesShownReachable, l.InstancesChecked)

	fr := r.FalseReports
	fmt.Fprintf(out, "\nFalse reports: %d in %d polls of the sled list (%d polls failed)", fr.Count, fr.Polls, fr.PollErrors)
	var excused []string
	for _, k := range sortedKeys(fr.Excused) {
		excused = append(excused, fmt.Sprintf("%s %d", k, fr.Excused[k]))
	}
	fmt.Fprintf(out, "; sightings excused: %s\n", strings.Join(append(excused, "none")[:max(1, len(excused))], ", "))
	for _, rep := range fr.Reports {
		fmt.Fprintf(out, "  %s during %s: sled %s (last seen %s before)\n", rep.At.Format("15:04:05.000"), rep.Phase, rep.Sled,
			rep.At.Sub(rep.LastSeen).Round(time.Millisecond))
	}

	if p := r.CPUProfile; p != nil {
		if p.Error != "" {
			fmt.Fprintf(out, "\nCPU profile of nexus: not taken: %s\n", p.Error)
		} else {
			fmt.Fprintf(out, "\nCPU profile of nexus during the busy phase: %s (%d bytes); go tool pprof -top %s\n", p.File, p.Bytes, p.File)
		}
	}

	fmt.Fprintf(out, "\nSPEC 6 targets (the %d-sled line) and issue 16's sled loss, measured at %d sleds and %d instances\n", specSleds, r.Sleds, r.Instances)
	tw = tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	for _, t := range r.Targets {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Name, t.Bound, t.Verdict, t.Measured)
	}
	tw.Flush()
	if len(r.Problems) == 0 {
		fmt.Fprintf(out, "\nProblems: none\n")
	} else {
		fmt.Fprintf(out, "\nProblems:\n")
		for _, p := range r.Problems {
			fmt.Fprintf(out, "  %s\n", p)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// writeJSON writes the report's figures to path.
func (r *Report) writeJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
