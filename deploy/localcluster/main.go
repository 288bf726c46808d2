package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

// options are the launcher's flags.
type options struct {
	dir          string
	apiPort      int
	metricsPort  int
	fresh        bool
	readyTimeout time.Duration
	stopTimeout  time.Duration
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := pflag.NewFlagSet("localcluster", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dir, "dir", "", "state directory (default <repository>/.local/cluster)")
	fs.IntVar(&o.apiPort, "api-port", 12220, "port of nexus's REST API on 127.0.0.1")
	fs.IntVar(&o.metricsPort, "metrics-port", 12223, "port of nexus's Prometheus metrics (/metrics) on 127.0.0.1")
	fs.BoolVar(&o.fresh, "fresh", false, "wipe the state directory first (database, zones, logs)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", time.Minute, "bound on nexus answering and both sleds registering")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 15*time.Second, "bound on the children's graceful stop before SIGKILL")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return o, nil
}

// run returns the process's exit code: 0 after a stop asked for by a signal,
// 1 when the cluster could not start or a child died, 2 for bad flags.
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

	l, err := prepare(sigCtx, opts, stdout)
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

// runCluster starts the children, reports readiness, and waits for a signal
// or the death of a child. Whatever ends it, every child is stopped and
// reaped before it returns.
func (l layout) runCluster(sigCtx context.Context, opts options, stdout, stderr io.Writer) int {
	// runCtx ends on a signal or, with a childExited cause, when any child
	// exits: every wait below is then cut short.
	runCtx, fail := context.WithCancelCause(sigCtx)
	defer fail(nil)
	var children []*child
	defer func() { stopAll(children, opts.stopTimeout, stdout) }()

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

// startAndAwait starts nexus, waits until its API answers, starts the sleds,
// waits until both are registered, and prints how to use the cluster.
func (l layout) startAndAwait(ctx context.Context, opts options, stdout io.Writer,
	fail context.CancelCauseFunc, started func(*child)) error {
	internal, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	api := apiURL(opts.apiPort)
	nexus, err := l.startChild("nexus", l.nexusArgs(opts.apiPort, opts.metricsPort, internal), fail, stdout)
	if err != nil {
		return err
	}
	started(nexus)
	// Sleds start only once nexus answers: a sled whose first registration
	// fails backs off, which would slow every start.
	if err := waitSleds(ctx, api, l.token, nil, opts.readyTimeout); err != nil {
		return fmt.Errorf("nexus did not answer at %s: %w (log: %s)", api, err, nexus.logPath)
	}
	var sleds []sledAddr
	for i := range sledCount {
		listen, err := freeLoopbackAddr()
		if err != nil {
			return err
		}
		c, err := l.startChild(sledName(i), l.sledArgs(i, listen, internal), fail, stdout)
		if err != nil {
			return err
		}
		started(c)
		sleds = append(sleds, sledAddr{name: sledName(i), id: sledID(i), addr: listen})
	}
	if err := waitSleds(ctx, api, l.token, sledIDs(), opts.readyTimeout); err != nil {
		return fmt.Errorf("the sleds did not register with nexus: %w (logs in %s)", err, l.logDir())
	}
	printReady(stdout, api, metricsURL(opts.metricsPort), l.token, sleds, l.logDir())
	return nil
}

func apiURL(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }

func metricsURL(port int) string { return fmt.Sprintf("http://127.0.0.1:%d/metrics", port) }
