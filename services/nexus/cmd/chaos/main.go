// Command chaos is the harness of SPEC R1: random instance operations from
// many clients, through every nexus replica, while replicas, sled-agents
// and the network fail on a seeded schedule; then the history is checked
// for linearizability against the instance model (racktest/chaos) and the
// rack-wide invariants are checked against the database and every sled's
// inventory.
//
// Usage:
//
//	go run ./services/nexus/cmd/chaos                                     # 60 s, every fault kind, a new seed
//	STRESS_SEED=42 go run ./services/nexus/cmd/chaos                      # replay seed 42
//	go run ./services/nexus/cmd/chaos --duration 5m --clients 16 --faults sled-kill,partition
//	go run ./services/nexus/cmd/chaos --dsn postgres://user@host/emptydb  # an existing, empty database
//	go run ./services/nexus/cmd/chaos --faults db-failover,replica-kill   # over a failing-over database
//
// What runs: a process rack (racktest.StartProcesses) of 3 sled-agents,
// each the real binary, and 3 nexus replicas, each a nexus zone of one
// sled (the process zone runtime, set up by rack setup), over PostgreSQL
// (a throwaway local server unless --dsn names one). Every sled sits
// behind a proxy the harness owns, so that it can be cut off from nexus.
//
// A run:
//
//  1. creates --instances instances (every other one reincarnates after a
//     failure, auto_restart_policy best_effort; the others never), some
//     started, and tracks each in the history once it has settled;
//  2. runs --clients clients for --duration: each calls start, stop,
//     reboot, force-terminate, migrate (as a fleet admin, to a random
//     sled), view or list of a random tracked instance, each call through
//     a replica drawn for it, recording every call with a bound
//     (--call-timeout; a call with no answer is indeterminate);
//  3. meanwhile injects faults one at a time on the seeded schedule, each
//     lasting a bounded random time: kill -9 of a replica's zone process
//     (its sled-agent starts it again), kill -9 and restart of a
//     sled-agent, SIGSTOP and SIGCONT of a sled-agent, and a partition
//     between the replicas and a sled (the sled's proxy cut: every
//     replica loses that sled at once; the harness has no per-replica
//     link), and a partition between one replica and the database (a
//     proxy of the harness's in front of the database for each replica,
//     cut: that replica's connections drop and new ones are refused);
//     and, only when --faults names it, db-failover: kill -9 of
//     the database's primary, pg_auto_failover promoting its synchronous
//     standby (the database is then a pkg/pgfailover formation, not a
//     plain server, and --dsn is refused), with a probe creating projects
//     through the API all along to measure how long writes fail, and the
//     killed node then rejoining as the standby;
//     Halfway through (--expunge, on by default) it wedges one replica
//     (SIGSTOP, mid-saga) and expunges it through the others, as an
//     operator would (seed 000): the faults after that spare it, the
//     clients call the others, and the invariants check it was confirmed
//     gone and left no saga or updater lock of its own;
//  4. samples every instance's and VMM's generation in the database
//     throughout, and whether any instance has two VMMs running;
//  5. heals everything, lets the clients' calls end, waits for the rack
//     to settle (no saga running, no instance in a transitional state),
//     checks the invariants (and that no project a probe saw created is
//     lost) and runs the linearizability checker, which
//     writes the history and porcupine's HTML view into --out when it
//     fails; and prints a summary.
//
// It exits non-zero on any violation. The seed is printed first; the same
// seed replays the same schedule of faults and choices of the clients (the
// rack's own timing still differs from run to run).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/racktest/chaos"
)

func main() { racktest.CommandMain("chaos", run) }

// options are the command line.
type options struct {
	seed          uint64
	duration      time.Duration
	clients       int
	instances     int
	faults        []faultKind
	ops           []chaos.Kind
	dsn           string
	out           string
	callTimeout   time.Duration
	think         time.Duration
	faultGap      time.Duration
	faultHold     time.Duration
	expunge       bool
	settleTimeout time.Duration
	checkTimeout  time.Duration
	sample        time.Duration
	// check is a history written by an earlier run, to check again
	// instead of running.
	check string
}

const usageHead = `chaos: random instance operations from many clients through 3 nexus replicas
(zones of 3 sleds, over PostgreSQL) under replica kills, sled-agent kills and
pauses, partitions and (when asked for) database failovers; then the
linearizability check of SPEC R1 and the rack-wide invariants.
STRESS_SEED=<n> replays a run's seed.

Flags:
`

// seedFromEnv is the default seed: STRESS_SEED, else the clock.
func seedFromEnv(getenv func(string) string) (uint64, error) {
	if s := getenv("STRESS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("STRESS_SEED: %q is not an unsigned integer", s)
		}
		return seed, nil
	}
	return uint64(time.Now().UnixNano()), nil
}

func parseFlags(args []string, getenv func(string) string, out io.Writer) (options, error) {
	var o options
	seed, err := seedFromEnv(getenv)
	if err != nil {
		return o, err
	}
	var faults, ops []string
	fs := pflag.NewFlagSet("chaos", pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usageHead)
		fs.PrintDefaults()
	}
	fs.Uint64Var(&o.seed, "seed", seed, "seed of the fault schedule and the clients' choices (default: STRESS_SEED, else the clock)")
	fs.DurationVar(&o.duration, "duration", time.Minute, "how long the clients call and the faults are injected")
	fs.IntVar(&o.clients, "clients", 8, "concurrent clients")
	fs.IntVar(&o.instances, "instances", 5, "instances the clients operate on")
	fs.StringSliceVar(&faults, "faults", faultNames(allFaults), "fault kinds injected, comma-separated (none: an empty string; also "+string(faultDBFailover)+", not with --dsn)")
	fs.StringSliceVar(&ops, "ops", kindNames(allKinds), "operations the clients call, comma-separated (to narrow a failure down)")
	fs.StringVar(&o.dsn, "dsn", "", "PostgreSQL DSN of an empty database for nexus (default: a throwaway local server)")
	fs.StringVar(&o.out, "out", "", "where a failed check writes the history and its HTML view (default: a new directory under the temporary directory)")
	fs.DurationVar(&o.callTimeout, "call-timeout", 20*time.Second, "bound on one client call; a call with no answer by then is indeterminate")
	fs.DurationVar(&o.think, "think", 20*time.Millisecond, "most time a client waits between two calls (drawn at random)")
	fs.DurationVar(&o.faultGap, "fault-gap", 3*time.Second, "most time between two faults (drawn at random, at least a quarter of it)")
	fs.BoolVar(&o.expunge, "expunge", true, "halfway through, expunge one replica through the others (X3, X4); the faults after it spare that replica")
	fs.DurationVar(&o.faultHold, "fault-hold", 4*time.Second, "most time a fault lasts before it heals (drawn at random, at least a quarter of it)")
	fs.DurationVar(&o.settleTimeout, "settle-timeout", 90*time.Second, "bound on the rack settling once the faults are healed")
	fs.DurationVar(&o.checkTimeout, "check-timeout", 3*time.Minute, "bound on the linearizability check")
	fs.StringVar(&o.check, "check", "", "check the history file an earlier run wrote (its --out) again, and run nothing")
	fs.DurationVar(&o.sample, "sample", 250*time.Millisecond, "how often the database's generations are sampled")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	o.faults, err = parseFaults(faults)
	if err != nil {
		bad("%v", err)
	}
	if o.ops, err = parseKinds(ops); err != nil {
		bad("%v", err)
	}
	if o.clients < 1 {
		bad("--clients must be at least 1, got %d", o.clients)
	}
	if o.instances < 1 {
		bad("--instances must be at least 1, got %d", o.instances)
	}
	for name, d := range map[string]time.Duration{"--duration": o.duration, "--call-timeout": o.callTimeout,
		"--fault-gap": o.faultGap, "--fault-hold": o.faultHold, "--settle-timeout": o.settleTimeout,
		"--check-timeout": o.checkTimeout, "--sample": o.sample} {
		if d <= 0 {
			bad("%s must be positive, got %s", name, d)
		}
	}
	if o.think < 0 {
		bad("--think must not be negative, got %s", o.think)
	}
	if slices.Contains(o.faults, faultDBFailover) && slices.Contains(o.faults, faultDBPartition) {
		bad("--faults %s and %s: a partition cuts the link to one server, and a formation has two", faultDBFailover, faultDBPartition)
	}
	if o.dsn != "" && slices.Contains(o.faults, faultDBFailover) {
		bad("--faults %s and --dsn: a database failover needs the harness's own pg_auto_failover formation, not --dsn's database", faultDBFailover)
	}
	if len(problems) > 0 {
		return o, errors.New(strings.Join(problems, "; "))
	}
	return o, nil
}

// run is the whole command: the seed and the summary go to out, progress
// to progress. It returns an error on any violation.
func run(ctx context.Context, args []string, out, progress io.Writer) error {
	o, err := parseFlags(args, os.Getenv, out)
	if err != nil {
		return err
	}
	if o.check != "" {
		return checkAgain(o, out)
	}
	fmt.Fprintf(out, "seed: %d (replay: STRESS_SEED=%d)\n", o.seed, o.seed)
	if o.out == "" {
		o.out, err = os.MkdirTemp("", fmt.Sprintf("chaos-%d-", o.seed))
	} else {
		err = os.MkdirAll(o.out, 0o755)
	}
	if err != nil {
		return err
	}
	h := newHarness(o, progress)
	defer h.tb.Close()
	if err := h.setUp(ctx); err != nil {
		return fmt.Errorf("setting the rack up: %w", err)
	}
	if err := h.createInstances(ctx); err != nil {
		return fmt.Errorf("creating the instances: %w", err)
	}
	if err := h.exercise(ctx); err != nil {
		return err
	}
	s := h.verify(ctx)
	s.print(out)
	if s.failed() {
		return fmt.Errorf("seed %d: %s", o.seed, strings.Join(s.violations(), "; "))
	}
	return nil
}

// checkAgain checks a written history again: to read a failure, or to
// minimise one by cutting the file down.
func checkAgain(o options, out io.Writer) error {
	h, err := chaos.ReadHistory(o.check)
	if err != nil {
		return err
	}
	dir := o.out
	if dir == "" {
		dir = filepath.Dir(o.check)
	}
	began := time.Now()
	res, err := chaos.Check(h, o.checkTimeout, dir)
	fmt.Fprintf(out, "%s: %s in %s: %d calls (%d indeterminate) on %d instances\n", o.check, res.Outcome,
		time.Since(began).Round(time.Millisecond), res.Calls, res.Indeterminate, res.Instances)
	return err
}
