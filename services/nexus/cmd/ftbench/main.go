// Command ftbench measures force-terminate (SPEC F1-F12) against the
// targets of SPEC section 6, and the database floor it is judged against,
// in the same run.
//
// It starts nexus in process on PostgreSQL (a DSN given with
// --database-url, or a throwaway durable server, fsync on, started with
// --start-postgres) and simulated sled-agents in process (auto mode, short
// transitions), creates and starts --instances instances, and then, for
// each concurrency in --clients:
//
//   - force-terminates every instance once, each request for a distinct
//     running instance, through the REST API over loopback from that many
//     concurrent clients, and reports the count, p50, p99 and max latency
//     and the throughput;
//   - measures the floor at the same concurrency: as many goroutines, each
//     on its own connection and its own row, doing one guarded single-row
//     UPDATE … WHERE id = $1 AND state_generation = $2 RETURNING … per
//     autocommit transaction, for as long as the force-terminates took (at
//     least a second), in a scratch schema (ftbench_floor) of the same
//     database; and the ratio of the two throughputs;
//   - counts what one force-terminate costs the database, measured rather
//     than guessed: commits (the xact_commit delta of pg_stat_database for
//     nexus's database, read after PostgreSQL has flushed its statistics,
//     which read-only autocommit SELECTs count as transactions too), write
//     transactions (the delta of the next transaction id, which only
//     writing transactions take), and statements, i.e. round trips
//     (pg_stat_statements calls, BEGIN and COMMIT included), when the
//     server preloads pg_stat_statements (--start-postgres does);
//
// then restarts every instance for the next concurrency. The background
// tasks are left idle (their period is an hour), so that only the
// force-terminates touch the database while they are measured.
//
// Usage:
//
//	go run ./services/nexus/cmd/ftbench --start-postgres
//	go run ./services/nexus/cmd/ftbench --database-url postgres://user@host/emptydb
//
// A --database-url must name an empty database (nexus's schema and the
// scratch schema are created in it) on a server whose maintenance database
// "postgres" the same user can read statistics from.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/rackplane/rackplane/services/racktest"
	"github.com/spf13/pflag"
)

func main() {
	racktest.CommandMain("ftbench", func(ctx context.Context, args []string, stdout, _ io.Writer) error {
		return run(ctx, args, stdout)
	})
}

// options are the command line.
type options struct {
	databaseURL   string
	startPostgres bool
	instances     int
	clients       []int
	sleds         int
	vmmDelay      time.Duration
	statsWait     time.Duration
	logFile       string
	cpuProfile    string
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	var clients string
	fs := pflag.NewFlagSet("ftbench", pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL DSN of an empty database for nexus (required unless --start-postgres)")
	fs.BoolVar(&o.startPostgres, "start-postgres", false, "start a throwaway local PostgreSQL server (fsync on, pg_stat_statements loaded) and use it")
	fs.IntVar(&o.instances, "instances", 512, "instances to create, start and force-terminate in each round")
	fs.StringVar(&clients, "clients", "1,64", "comma-separated concurrencies, measured in turn")
	fs.IntVar(&o.sleds, "sleds", 2, "simulated sled-agents")
	fs.DurationVar(&o.vmmDelay, "vmm-delay", 5*time.Millisecond, "transition delay of the simulated hypervisors")
	fs.DurationVar(&o.statsWait, "stats-wait", 11*time.Second,
		"idle wait before each reading of pg_stat_database, so that every backend has flushed its counters (PostgreSQL flushes an idle backend's within 10s)")
	fs.StringVar(&o.logFile, "log-file", "", "write nexus's and the sled-agents' logs (JSON, info level) here; by default they are encoded and discarded")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile of each round's force-terminates (nexus, sleds and clients, all in this process) to this path, suffixed with .<clients>")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var problems []string
	switch {
	case o.databaseURL == "" && !o.startPostgres:
		problems = append(problems, "--database-url is required unless --start-postgres is given")
	case o.databaseURL != "" && o.startPostgres:
		problems = append(problems, "--database-url and --start-postgres exclude each other")
	}
	if o.instances < 1 {
		problems = append(problems, fmt.Sprintf("--instances must be at least 1, got %d", o.instances))
	}
	if o.sleds < 1 {
		problems = append(problems, fmt.Sprintf("--sleds must be at least 1, got %d", o.sleds))
	}
	if o.vmmDelay < 0 || o.statsWait < 0 {
		problems = append(problems, "--vmm-delay and --stats-wait must not be negative")
	}
	for _, field := range strings.Split(clients, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || c < 1 {
			problems = append(problems, fmt.Sprintf("--clients: %q is not a positive number", field))
			continue
		}
		if c > o.instances {
			problems = append(problems, fmt.Sprintf("--clients: %d clients need at least as many instances (--instances %d)", c, o.instances))
		}
		o.clients = append(o.clients, c)
	}
	if len(problems) > 0 {
		return o, errors.New(strings.Join(problems, "; "))
	}
	return o, nil
}

// run is the whole command, writing its report to out.
func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	b, err := setUp(ctx, o, out)
	if err != nil {
		return err
	}
	defer b.close()
	var rounds []round
	for i, c := range o.clients {
		if i > 0 {
			if err := b.restartAll(ctx); err != nil {
				return err
			}
		}
		r, err := b.round(ctx, c)
		if err != nil {
			return err
		}
		rounds = append(rounds, r)
	}
	report(out, o, rounds)
	return nil
}
