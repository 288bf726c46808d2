package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/services/nexus/racksetup"
)

// options are the launcher's flags.
type options struct {
	dir         string
	apiPort     int
	metricsPort int
	// apiPortGiven and metricsPortGiven: the flag was on the command line.
	apiPortGiven, metricsPortGiven bool
	fresh                          bool
	postgres                       bool
	readyTimeout                   time.Duration
	stopTimeout                    time.Duration
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := pflag.NewFlagSet("localcluster", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dir, "dir", "", "state directory (default <repository>/.local/cluster, or .local/cluster-postgres with --postgres)")
	fs.IntVar(&o.apiPort, "api-port", 12220, "port of the first nexus's REST API on 127.0.0.1; replica k uses this plus 10k, and the next port for its internal API")
	fs.IntVar(&o.metricsPort, "metrics-port", 12223, "port of the first nexus's Prometheus metrics (/metrics) on 127.0.0.1; replica k uses this plus 10k")
	fs.BoolVar(&o.fresh, "fresh", false, "wipe the state directory first (database, zones, logs)")
	fs.BoolVar(&o.postgres, "postgres", false, "three sleds, each running a nexus replica, over a throwaway PostgreSQL server started from this machine's binaries; the state starts fresh each time")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 2*time.Minute, "bound on rack setup, every replica answering and every sled registering")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 15*time.Second, "bound on the processes' graceful stop before SIGKILL")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	o.apiPortGiven, o.metricsPortGiven = fs.Changed("api-port"), fs.Changed("metrics-port")
	return o, nil
}

// run returns the process's exit code: 0 after a stop asked for by a signal,
// 1 when the cluster could not start or a process died, 2 for bad flags.
func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "localcluster:", err)
		return 2
	}
	// Subscribe before doing anything, so that Ctrl-C during the build
	// already takes the orderly path.
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	// After the first signal, a second one gets the default action: it kills
	// the launcher at once, and the kernel kills the children with it.
	go func() {
		<-sigCtx.Done()
		stopSignals()
	}()
	// The nexus zones are the sled-agents' children and, by design, outlive
	// them; as the orphans' reaper the launcher can wait for them when it
	// stops them.
	if err := becomeSubreaper(); err != nil {
		fmt.Fprintln(stderr, "localcluster:", err)
		return 1
	}

	l, err := prepare(sigCtx, opts, stdout)
	if l.lock != nil {
		defer l.lock.Release()
	}
	if err == nil && opts.postgres {
		var stopDatabase func()
		stopDatabase, err = l.startPostgres(stdout)
		if err == nil {
			defer stopDatabase()
		}
	}
	if err != nil {
		if sigCtx.Err() != nil {
			fmt.Fprintln(stdout, "interrupted before the cluster started")
			return 0
		}
		fmt.Fprintln(stderr, "localcluster:", err)
		return 1
	}
	return l.runCluster(sigCtx, opts, stdout, stderr)
}

// prepare finds the repository, makes (or wipes) the state directory and
// builds the binaries.
func prepare(ctx context.Context, opts options, stdout io.Writer) (layout, error) {
	l := layout{apiPort: opts.apiPort, metrics: opts.metricsPort, sleds: 2, replicas: 1}
	var err error
	if l.repo, err = moduleRoot(ctx); err != nil {
		return l, err
	}
	dir := opts.dir
	if dir == "" {
		dir = filepath.Join(l.repo, ".local", "cluster")
		if opts.postgres {
			dir += "-postgres"
		}
	}
	// The state directory's own path, however it was reached: the rack's
	// plan records its database's path, which must not change between
	// starts.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return l, err
	}
	if l.dir, err = filepath.Abs(dir); err == nil {
		l.dir, err = filepath.EvalSymlinks(l.dir)
	}
	if err != nil {
		return l, err
	}
	// A throwaway database means a new rack each start: sled ledgers and
	// zones from the last one would contradict it.
	if l.lock, err = claimStateDir(l.dir, opts.fresh || opts.postgres, stdout); err != nil {
		return l, err
	}
	if err := makeStateDir(l.dir, stdout); err != nil {
		return l, err
	}
	mode := "sqlite"
	if opts.postgres {
		mode, l.sleds, l.replicas = "postgres", 3, 3
	}
	if l.ids, err = loadIdentity(l.dir, mode, l.sleds, l.replicas); err != nil {
		return l, err
	}
	if err := l.keepRecordedPorts(opts); err != nil {
		return l, err
	}
	if !opts.postgres {
		l.database = racksetup.Database{Backend: "sqlite", URL: filepath.Join(l.dir, "nexus", "nexus.db")}
		if err := os.MkdirAll(filepath.Dir(l.database.URL), 0o755); err != nil {
			return l, err
		}
	}
	fmt.Fprintf(stdout, "building nexus, sled-agent and rackctl into %s\n", filepath.Join(l.dir, "bin"))
	return l, l.build(ctx)
}

// startPostgres starts the throwaway server the replicas share.
func (l *layout) startPostgres(stdout io.Writer) (stop func(), err error) {
	// Its files are in a directory named after the state directory, not
	// in it: the server runs as the postgres user when the launcher runs
	// as root, and must reach them. The name is fixed, so that what a
	// launcher killed with SIGKILL left there (the server dies with it) is
	// removed by the next start.
	sum := sha256.Sum256([]byte(l.dir))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("rackplane-localcluster-pg-%x", sum[:6]))
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	dsn, stop, err := pgtest.StartServer(pgtest.ServerOptions{Durable: true, Dir: dir})
	if err != nil {
		return nil, fmt.Errorf("--postgres: %w", err)
	}
	l.database = racksetup.Database{Backend: "postgres", URL: dsn}
	fmt.Fprintf(stdout, "started PostgreSQL at %s (its files in %s, removed when the cluster stops)\n", dsn, dir)
	return stop, nil
}

// runCluster starts the processes, reports readiness, and waits for a
// signal or the death of a child. Whatever ends it, every process it
// started, the zones included, is stopped and reaped before it returns.
func (l layout) runCluster(sigCtx context.Context, opts options, stdout, stderr io.Writer) int {
	// runCtx ends on a signal or, with a childExited cause, when any child
	// exits: every wait below is then cut short.
	runCtx, fail := context.WithCancelCause(sigCtx)
	defer fail(nil)
	var children []*child
	defer func() {
		stopAll(children, opts.stopTimeout, stdout)
		l.stopZones(opts.stopTimeout, stdout)
	}()

	err := l.startAndAwait(runCtx, opts, stdout, fail, func(c *child) { children = append(children, c) })
	if err == nil {
		<-runCtx.Done()
	}
	var died *childExited
	switch {
	case sigCtx.Err() != nil:
		fmt.Fprintln(stdout, "stopping the cluster (a second Ctrl-C kills it at once)")
		return 0
	case errors.As(context.Cause(runCtx), &died):
		fmt.Fprintf(stderr, "localcluster: %s exited unexpectedly (%v); stopping the others\n", died.c.name, died.c.err)
		fmt.Fprintf(stderr, "last lines of %s:\n%s", died.c.logPath, tail(died.c.logPath, 20))
		return 1
	default:
		fmt.Fprintln(stderr, "localcluster:", err)
		return 1
	}
}

// startAndAwait mints the token, starts the sled-agents, sets the rack up
// from its plan (which starts the nexus zones), waits until every sled is
// registered, and prints how to use the cluster.
func (l layout) startAndAwait(ctx context.Context, opts options, stdout io.Writer,
	fail context.CancelCauseFunc, started func(*child)) error {
	// Minting first also creates the database's schema, before any
	// replica opens it.
	token, err := l.mintToken(ctx)
	if err != nil {
		return err
	}
	var sleds []sledAddr
	for i := range l.sleds {
		listen, err := freeLoopbackAddr()
		if err != nil {
			return err
		}
		sleds = append(sleds, sledAddr{name: sledName(i), id: l.sledID(i), addr: listen})
	}
	// The plan first: the certificates it names must be there before a
	// sled-agent starts, which speaks only mutual TLS (S1, S2).
	planPath, err := l.writePlan(sleds)
	if err != nil {
		return err
	}
	if err := l.issueCertificates(ctx, planPath); err != nil {
		return err
	}
	for i, s := range sleds {
		c, err := l.startChild(s.name, "sled-agent", l.sledConfig(i, s.addr).Args(), fail, stdout)
		if err != nil {
			return err
		}
		started(c)
	}
	if err := l.setUpRack(ctx, planPath, opts.readyTimeout); err != nil {
		return err
	}
	zones, err := l.reportZones(stdout)
	if err != nil {
		return err
	}
	api := l.apiURL(0)
	if err := waitSleds(ctx, api, token, l.sledIDs(), opts.readyTimeout); err != nil {
		return fmt.Errorf("the sleds did not register with nexus: %w (logs in %s)", err, l.logDir())
	}
	rackctlConfig, err := l.writeRackctlConfig(token)
	if err != nil {
		return err
	}
	printReady(stdout, l, token, rackctlConfig, sleds, zones)
	return nil
}
