// Command scalebench measures one nexus with many simulated sleds and
// instances against the 1,000-sled line of SPEC section 6, and the sled
// loss of issue 16: background pass durations, REST latency on an idle
// rack and during passes, nexus's memory and goroutines, the database's
// size, and how soon a sled that stops answering is reported unreachable
// (and back), with 0 false reports.
//
// Usage:
//
//	go run ./services/nexus/cmd/scalebench --start-postgres                                 # the SPEC 6 size: 1,000 sleds, 10,000 instances
//	go run ./services/nexus/cmd/scalebench --start-postgres --sleds 100 --instances 1000    # quick run
//	go run ./services/nexus/cmd/scalebench --backend sqlite --sleds 100 --instances 1000    # quick run on SQLite
//	go run ./services/nexus/cmd/scalebench --dsn postgres://user@host/emptydb               # an existing, empty database
//	go run ./services/nexus/cmd/scalebench --backend sqlite --sleds 10 --instances 50 \
//	    --task-period 1s --samples 30                                                       # smoke size (the CI test)
//
// Presets, scaled down: --sleds 100 --instances 1000 takes a few minutes;
// --sleds 10 --instances 50 under one. The SPEC 6 targets are stated for
// 1,000 sleds and 10,000 instances: at any other size the verdicts say
// what was measured, not whether the SPEC line holds.
//
// What runs where:
//
//   - nexus is ONE separate process, the real binary (built as the tests
//     build it, racktest.StartProcesses with no sleds of its own), over
//     the database, with its own rack certificate; its resident memory
//     (/proc/<pid>/status VmHWM, VmRSS) and goroutines (go_goroutines on
//     its metrics listener) are nexus's alone.
//   - The sleds are real sled-agents (sledagenttest): each its own gRPC
//     listener on its own port, its own two ledger directories, its own
//     inventory, simulated zone runtime and simulated hypervisor (auto
//     mode), its own rack certificate, registering and heartbeating to
//     nexus. All but one run inside this process. The one the harness
//     takes away (the "lost sled") is the real sled-agent binary, a
//     process of its own, so that SIGSTOP freezes all of it at once
//     (heartbeats, gRPC, VMMs) the way a hung machine stops answering,
//     without killing its VMMs or touching any record; SIGCONT brings it
//     back as it was.
//   - The rack is set up from a plan (racksetup, as an operator does):
//     every sled gets a zones config (an internal NTP zone and a crucible
//     zone per pool; the nexus replica a zone of a sled), so that the
//     zones push and inventory passes have real work on every sled.
//
// Phases:
//
//  1. create and start --instances instances through the REST API,
//     --concurrency at a time, with progress on stderr, until all run;
//  2. idle: nexus runs with every periodic task but replica_check and
//     expunge_confirm (one cheap query a second each) at an hour, so no
//     pass of inventory, zones_push, instance_watcher, instance_updater,
//     sled_liveness or the others runs (the report checks this from the
//     pass counters); the sleds heartbeat as always. REST latency is
//     measured: list (one page of 100), view, and start, stop and
//     force-terminate of --reserved instances kept for it;
//  3. nexus is restarted with the busy periods (--task-period for
//     inventory, zones_push, instance_watcher and instance_updater,
//     --liveness-period for sled_liveness, nexus's defaults for the
//     rest). Restarting is the honest way to make an idle rack: the other
//     way, measuring in the gaps between passes, has no gaps at 1,000
//     sleds, where passes take seconds each. The restart is excused from
//     the false-report count (sightings during it are reported apart)
//     until every sled has heartbeated to the new process;
//  4. busy: the same REST load, until every one of inventory, zones_push
//     and instance_watcher has finished --busy-passes passes, every
//     operation has --samples samples, and 20 of them (or --samples)
//     overlapped a pass. Each request is classified by
//     whether it overlapped a pass of those three, reconstructed from
//     nexus's pass metrics polled every --poll (a pass that ended between
//     two polls is taken to span from the earlier poll minus the pass
//     time to the later poll: intervals are widened, never narrowed). The
//     SPEC ratio compares the p99 of requests that overlapped a pass with
//     the idle p99. --cpu-profile fetches nexus's CPU profile meanwhile,
//     from the first such pass on;
//  5. sled loss: the lost sled, which hosts running instances, is
//     SIGSTOPped; the harness polls the sled API until it shows it
//     "unreachable", checks its instances show "sled_reachability":
//     "unreachable", creates --loss-instances instances and reads nexus's
//     vmm table to check none was placed on it (nor any VMM since it
//     stopped), then SIGCONTs it and polls until it is "reachable";
//  6. the database's size and rows per table.
//
// Throughout, the sled list is polled every --sled-poll: any sled shown
// unreachable that the harness did not stop is a false report.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/rackplane/rackplane/services/racktest"
)

func main() { racktest.CommandMain("scalebench", run) }

// options are the command line.
type options struct {
	sleds          int
	instances      int
	concurrency    int
	backend        string
	startPostgres  bool
	dsn            string
	jsonPath       string
	keep           bool
	cpuProfile     string
	cpuProfileTime time.Duration
	trace          string

	reserved      int
	samples       int
	busyPasses    int
	taskPeriod    time.Duration
	liveness      time.Duration
	heartbeat     time.Duration
	hbTimeout     time.Duration
	vmmDelay      time.Duration
	poll          time.Duration
	sledPoll      time.Duration
	readInterval  time.Duration
	lossInstances int
	phaseTimeout  time.Duration
	nexusLog      string
	sledLog       string
}

const usageHead = `scalebench: one nexus (a process) with many real simulated sled-agents and
instances, measured against SPEC 6 (the 1,000-sled line) and issue 16's sled loss.

Presets: the SPEC size is the default (--sleds 1000 --instances 10000);
quick: --sleds 100 --instances 1000; smoke: --sleds 10 --instances 50 --task-period 1s --samples 30.

Flags:
`

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := pflag.NewFlagSet("scalebench", pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usageHead)
		fs.PrintDefaults()
	}
	fs.IntVar(&o.sleds, "sleds", 1000, "simulated sled-agents (at least 2): one a process of its own (the lost sled), the others in this process")
	fs.IntVar(&o.instances, "instances", 10000, "instances created and started through the REST API (--reserved of them measure start, stop and force-terminate)")
	fs.IntVar(&o.concurrency, "concurrency", 16, "instances created at once")
	fs.StringVar(&o.backend, "backend", "postgres", "nexus's database: postgres or sqlite")
	fs.BoolVar(&o.startPostgres, "start-postgres", false, "start a throwaway local PostgreSQL server (fsync on) for nexus")
	fs.StringVar(&o.dsn, "dsn", "", "PostgreSQL DSN of an empty database for nexus (with --backend postgres, unless --start-postgres)")
	fs.StringVar(&o.jsonPath, "json", "", "also write the report's figures as JSON to this file")
	fs.BoolVar(&o.keep, "keep", false, "keep the rack running after the report, until Ctrl-C")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile of nexus during the busy phase to this file (nexus serves pprof on its metrics listener)")
	fs.DurationVar(&o.cpuProfileTime, "cpu-profile-time", 30*time.Second, "how long the --cpu-profile and --trace last (the busy phase lasts at least as long)")
	fs.StringVar(&o.trace, "trace", "", "write nexus's execution trace during the busy phase to this file (go tool trace -pprof=sync|net|sched tells what its passes wait on)")
	fs.IntVar(&o.reserved, "reserved", 8, "instances reserved for measuring start, stop and force-terminate: one client each")
	fs.IntVar(&o.samples, "samples", 200, "REST samples of each operation per phase, and of those overlapping a pass in the busy phase (at least)")
	fs.IntVar(&o.busyPasses, "busy-passes", 3, "passes of each of inventory, zones_push and instance_watcher the busy phase lasts (at least)")
	fs.DurationVar(&o.taskPeriod, "task-period", 10*time.Second, "busy phase: period of inventory, zones_push, instance_watcher and instance_updater")
	fs.DurationVar(&o.liveness, "liveness-period", 0, "busy phase: period of sled_liveness (default: nexus's)")
	fs.DurationVar(&o.heartbeat, "heartbeat-period", 0, "the sleds' heartbeat_period (default: the sled-agent's)")
	fs.DurationVar(&o.hbTimeout, "heartbeat-timeout", 0, "nexus's sled_heartbeat_timeout (default: nexus's)")
	fs.DurationVar(&o.vmmDelay, "vmm-delay", 0, "the simulated hypervisors' transition delay (default: the sled-agent's)")
	fs.DurationVar(&o.poll, "poll", 500*time.Millisecond, "how often nexus's metrics and /proc/<pid>/status are read")
	fs.DurationVar(&o.sledPoll, "sled-poll", time.Second, "how often the sled list is read for false reports")
	fs.DurationVar(&o.readInterval, "read-interval", 20*time.Millisecond, "pause between two measured list or view requests of one client")
	fs.IntVar(&o.lossInstances, "loss-instances", 5, "instances created while the lost sled is unreachable")
	fs.DurationVar(&o.phaseTimeout, "phase-timeout", 20*time.Minute, "bound on each phase")
	fs.StringVar(&o.nexusLog, "nexus-log", "", "write nexus's log (JSON) to this file at the end")
	fs.StringVar(&o.sledLog, "sled-log", "", "write the in-process sled-agents' logs (JSON, warnings and errors) to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	switch o.backend {
	case "postgres":
		switch {
		case o.dsn == "" && !o.startPostgres:
			bad("--backend postgres needs --start-postgres or --dsn")
		case o.dsn != "" && o.startPostgres:
			bad("--dsn and --start-postgres exclude each other")
		}
	case "sqlite":
		if o.dsn != "" || o.startPostgres {
			bad("--dsn and --start-postgres are for --backend postgres")
		}
	default:
		bad("--backend %q is not postgres or sqlite", o.backend)
	}
	if o.sleds < 2 {
		bad("--sleds must be at least 2 (one of them is lost and found again), got %d", o.sleds)
	}
	if o.reserved < 1 {
		bad("--reserved must be at least 1, got %d", o.reserved)
	}
	if o.instances < o.reserved+o.sleds {
		bad("--instances (%d) must be at least --reserved plus --sleds (%d), so that the lost sled hosts instances", o.instances, o.reserved+o.sleds)
	}
	if o.concurrency < 1 || o.samples < 1 || o.busyPasses < 1 || o.lossInstances < 1 {
		bad("--concurrency, --samples, --busy-passes and --loss-instances must be at least 1")
	}
	for name, d := range map[string]time.Duration{"--task-period": o.taskPeriod, "--poll": o.poll, "--sled-poll": o.sledPoll,
		"--phase-timeout": o.phaseTimeout, "--cpu-profile-time": o.cpuProfileTime} {
		if d <= 0 {
			bad("%s must be positive", name)
		}
	}
	for name, d := range map[string]time.Duration{"--liveness-period": o.liveness, "--heartbeat-period": o.heartbeat,
		"--heartbeat-timeout": o.hbTimeout, "--vmm-delay": o.vmmDelay, "--read-interval": o.readInterval} {
		if d < 0 {
			bad("%s must not be negative", name)
		}
	}
	if (o.cpuProfile != "" || o.trace != "") && o.cpuProfileTime < time.Second {
		bad("--cpu-profile-time must be at least 1s")
	}
	if len(problems) > 0 {
		return o, errors.New(strings.Join(problems, "; "))
	}
	return o, nil
}

// run is the whole command: the report goes to out, progress to progress.
func run(ctx context.Context, args []string, out, progress io.Writer) error {
	o, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	b := newBench(o, out, progress)
	defer b.harness.Close()
	if err := b.raiseFileLimit(); err != nil {
		return err
	}
	if err := b.setUp(ctx); err != nil {
		return b.failed(err)
	}
	if err := b.createInstances(ctx); err != nil {
		return b.failed(err)
	}
	if err := b.idlePhase(ctx); err != nil {
		return b.failed(err)
	}
	if err := b.restartBusy(ctx); err != nil {
		return b.failed(err)
	}
	if err := b.busyPhase(ctx); err != nil {
		return b.failed(err)
	}
	if err := b.sledLoss(ctx); err != nil {
		return b.failed(err)
	}
	b.stopWatching()
	if err := b.databaseFigures(ctx); err != nil {
		b.problem("database figures: %v", err)
	}
	rep := b.report()
	rep.print(out)
	if o.jsonPath != "" {
		if err := rep.writeJSON(o.jsonPath); err != nil {
			return err
		}
	}
	if o.nexusLog != "" {
		if err := os.WriteFile(o.nexusLog, []byte(b.nexus.Log()+"\n"), 0o644); err != nil {
			return err
		}
	}
	if o.keep {
		b.keep(ctx)
	}
	return nil
}
