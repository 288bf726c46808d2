package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/pkg/testutil"
	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/racktest"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
)

const (
	project = "ftbench"
	// setUpConcurrency is how many instances are created or started at
	// once outside the measurements.
	setUpConcurrency = 16
	// runningBound is how long instances have to reach running.
	runningBound = 3 * time.Minute
	// idleTaskPeriod keeps nexus's background tasks from running during
	// the measurements.
	idleTaskPeriod = duration.Duration(time.Hour)
	// heartbeatPeriod is the sleds' heartbeat: rare, so that it hardly
	// shows in the database counters, and well inside heartbeatTimeout,
	// so that no sled is unreachable (and refused VMMs) meanwhile.
	heartbeatPeriod  = sledconfig.Duration(20 * time.Second)
	heartbeatTimeout = duration.Duration(time.Minute)
)

// bench is the rack under measurement.
type bench struct {
	opts      options
	out       io.Writer
	nexusDSN  string
	nexusDB   string // nexus's database name
	stats     *statsReader
	rack      *racktest.InProcess
	api       *racktest.Client
	instances []string
	cleanups  []func()
	// startRetries counts starts that answered 500 and were sent again,
	// since the last report; firstRetry is the first such answer.
	startRetries atomic.Int64
	retryMu      sync.Mutex
	firstRetry   string
}

func (b *bench) close() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
}

func (b *bench) onClose(f func()) { b.cleanups = append(b.cleanups, f) }

// setUp starts (or reaches) PostgreSQL, nexus and the sleds, and creates
// and starts the instances.
func setUp(ctx context.Context, o options, out io.Writer) (_ *bench, err error) {
	b := &bench{opts: o, out: out}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	adminDSN := ""
	serverNote := "the server at --database-url"
	if o.startPostgres {
		dsn, stop, err := pgtest.StartServer(pgtest.ServerOptions{Durable: true,
			Settings: []string{"shared_preload_libraries=pg_stat_statements"}})
		if err != nil {
			return nil, fmt.Errorf("starting PostgreSQL: %w", err)
		}
		b.onClose(stop)
		adminDSN = dsn
		if err := execOn(ctx, adminDSN, "CREATE DATABASE ftbench_nexus"); err != nil {
			return nil, err
		}
		b.nexusDSN = pgtest.WithDatabase(adminDSN, "ftbench_nexus")
		serverNote = "a throwaway local server started by ftbench"
	} else {
		b.nexusDSN = o.databaseURL
		adminDSN = pgtest.WithDatabase(o.databaseURL, "postgres")
	}
	nexusDB, err := sql.Open("pgx", b.nexusDSN)
	if err != nil {
		return nil, err
	}
	defer nexusDB.Close()
	var version, fsync, syncCommit string
	if err := nexusDB.QueryRowContext(ctx, `SELECT current_database(), current_setting('server_version'),
		current_setting('fsync'), current_setting('synchronous_commit')`).Scan(&b.nexusDB, &version, &fsync, &syncCommit); err != nil {
		return nil, fmt.Errorf("connecting to nexus's database: %w", err)
	}
	if err := setUpFloor(ctx, nexusDB, maxOf(o.clients)); err != nil {
		return nil, fmt.Errorf("creating the floor's scratch table: %w", err)
	}
	if !o.startPostgres {
		b.onClose(func() { execOn(context.Background(), b.nexusDSN, "DROP SCHEMA IF EXISTS ftbench_floor CASCADE") }) //nolint:errcheck // best effort
	}
	b.stats = openStats(ctx, adminDSN, b.nexusDB)
	b.onClose(b.stats.close)

	log, closeLog, err := logger(o.logFile)
	if err != nil {
		return nil, err
	}
	b.onClose(closeLog)
	if err := b.startRack(ctx, log); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "ftbench: force-terminate against the database floor (SPEC 6)\n")
	fmt.Fprintf(out, "  PostgreSQL %s, fsync=%s, synchronous_commit=%s: %s\n", version, fsync, syncCommit, serverNote)
	fmt.Fprintf(out, "  nexus and %d simulated sled-agents in this process (auto mode, %s transitions); background tasks idle\n",
		o.sleds, o.vmmDelay)
	fmt.Fprintf(out, "  %d CPUs, GOMAXPROCS %d; logs: JSON at info level, %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0),
		map[bool]string{true: "to " + o.logFile, false: "encoded and discarded"}[o.logFile != ""])
	if b.stats.note != "" {
		fmt.Fprintf(out, "  %s\n", b.stats.note)
	}
	if o.statsWait < 11*time.Second {
		fmt.Fprintf(out, "  --stats-wait %s is under PostgreSQL's 10s idle flush of statistics: commits and connections may be undercounted\n", o.statsWait)
	}

	began := time.Now()
	if err := b.createAll(ctx); err != nil {
		return nil, err
	}
	if err := b.startAll(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "  %d instances (1 vCPU, 1 GiB) created and running in %s\n", o.instances, time.Since(began).Round(time.Millisecond))
	// The tables are seconds old: autovacuum (one-minute naptime) has not
	// analyzed them yet, and without statistics PostgreSQL plans the
	// shared statements' joins as scans of the whole instance table. A
	// settled database has statistics.
	if err := execOn(ctx, b.nexusDSN, "ANALYZE"); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "  statistics gathered (ANALYZE), as autovacuum keeps them on a settled database\n")
	b.reportRetries()
	fmt.Fprintln(out)
	return b, nil
}

// startRack starts nexus and the sleds in this process (racktest), with
// nexus's background tasks idle and room for every instance on every sled,
// so that placement never refuses one.
func (b *bench) startRack(ctx context.Context, log *zap.Logger) error {
	harness := testutil.NewStandalone("ftbench", nil)
	b.onClose(harness.Close)
	ncpus, memGiB := uint32(max(64, b.opts.instances)), uint64(max(512, b.opts.instances))
	err := harness.Run(func() {
		b.rack = racktest.StartInProcess(harness, racktest.Options{Backend: datastore.Postgres, DatabaseURL: b.nexusDSN,
			Sleds: b.opts.sleds, Log: log,
			NexusConfig: func(_ int, c *nexusconfig.Config) {
				c.InstanceWatcherPeriod, c.InstanceUpdaterPeriod = idleTaskPeriod, idleTaskPeriod
				c.ReincarnationPeriod, c.SledLivenessPeriod = idleTaskPeriod, idleTaskPeriod
				c.SledHeartbeatTimeout = heartbeatTimeout
			},
			SledConfig: func(_ int, c *sledconfig.Config) {
				c.Zpools = c.Zpools[:1]
				c.NCPUs, c.MemoryGiB = ncpus, memGiB
				c.HeartbeatPeriod = heartbeatPeriod
				c.PublishRetryInitial, c.PublishRetryMax = sledconfig.Duration(5*time.Millisecond), sledconfig.Duration(100*time.Millisecond)
				c.HypervisorMode, c.VMMTransitionDelay = "auto", sledconfig.Duration(b.opts.vmmDelay)
			}})
		b.api = b.rack.Client(racktest.FleetAdmin)
	})
	if err != nil {
		return fmt.Errorf("starting the rack: %w", err)
	}
	idle := 2*maxOf(b.opts.clients) + setUpConcurrency
	b.api.HTTP.Transport = &http.Transport{MaxIdleConns: idle, MaxIdleConnsPerHost: idle, IdleConnTimeout: 5 * time.Minute}
	b.onClose(b.api.HTTP.CloseIdleConnections)
	sleds, err := b.rack.DataStore().SledList(ctx)
	if err != nil {
		return err
	}
	if len(sleds) != b.opts.sleds {
		return fmt.Errorf("nexus's database is not empty: it knows %d sleds, %d of them from an earlier run; give ftbench an empty database",
			len(sleds), len(sleds)-b.opts.sleds)
	}
	return nil
}

// logger encodes logs at info level: to a file, or to nothing, so that the
// cost of producing them is paid either way.
func logger(path string) (*zap.Logger, func(), error) {
	var sink zapcore.WriteSyncer = zapcore.AddSync(io.Discard)
	closeFile := func() {}
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return nil, nil, err
		}
		sink, closeFile = zapcore.Lock(f), func() { f.Close() }
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), sink, zap.InfoLevel))
	return log, func() { log.Sync(); closeFile() }, nil //nolint:errcheck // best effort
}

// call sends one REST request as the fleet admin.
func (b *bench) call(ctx context.Context, method, path, body string) (racktest.Response, error) {
	return b.api.Do(ctx, method, path, body)
}

func (b *bench) mustCall(ctx context.Context, method, path, body string, want ...int) (racktest.Response, error) {
	return b.api.Expect(ctx, method, path, body, want...)
}

// parallel runs f for every index below n, at most limit at a time, and
// returns the first error.
func parallel(n, limit int, f func(i int) error) error {
	var g errgroup.Group
	g.SetLimit(limit)
	for i := range n {
		g.Go(func() error { return f(i) })
	}
	return g.Wait()
}

func (b *bench) createAll(ctx context.Context) error {
	if _, err := b.mustCall(ctx, http.MethodPost, "/v1/projects", `{"name": "`+project+`", "description": "ftbench"}`, http.StatusCreated); err != nil {
		return err
	}
	b.instances = make([]string, b.opts.instances)
	var created atomic.Int64
	defer b.showProgress(ctx, "created", &created, b.opts.instances)()
	return parallel(b.opts.instances, setUpConcurrency, func(i int) error {
		defer created.Add(1)
		name := fmt.Sprintf("i-%d", i)
		a, err := b.mustCall(ctx, http.MethodPost, "/v1/instances?project="+project,
			fmt.Sprintf(`{"name": %q, "hostname": %q, "description": "", "memory": %d, "ncpus": 1, "start": false}`, name, name, 1<<30),
			http.StatusCreated)
		if err != nil {
			return err
		}
		var inst struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(a.Body, &inst); err != nil || inst.ID == "" {
			return fmt.Errorf("creating %s: %s", name, a.Body)
		}
		b.instances[i] = inst.ID
		return nil
	})
}

// startRetryLimit bounds how often one start that answered 500 is sent
// again.
const startRetryLimit = 20

// startAll starts every instance, setUpConcurrency at a time, and waits
// until they all run. Concurrent starts can answer 500 (on PostgreSQL, a
// serialization failure of the VMM allocation's SERIALIZABLE transaction,
// which nexus does not retry); the start unwound, so it is sent again, and
// the retries are reported.
func (b *bench) startAll(ctx context.Context) error {
	var started atomic.Int64
	stopProgress := b.showProgress(ctx, "started", &started, len(b.instances))
	err := parallel(len(b.instances), setUpConcurrency, func(i int) error {
		defer started.Add(1)
		path := "/v1/instances/" + b.instances[i] + "/start"
		for attempt := 0; ; attempt++ {
			a, err := b.call(ctx, http.MethodPost, path, "")
			switch {
			case err != nil:
				return fmt.Errorf("POST %s: %w", path, err)
			case a.Status == http.StatusAccepted || a.Status == http.StatusOK:
				return nil
			case a.Status == http.StatusInternalServerError && attempt < startRetryLimit:
				b.startRetries.Add(1)
				b.retryMu.Lock()
				if b.firstRetry == "" {
					b.firstRetry = strings.TrimSpace(string(a.Body))
				}
				b.retryMu.Unlock()
				backoff.Sleep(ctx, time.Duration(attempt+1)*5*time.Millisecond)
			default:
				return fmt.Errorf("POST %s: %d %s", path, a.Status, a.Body)
			}
		}
	})
	stopProgress()
	if err != nil {
		return err
	}
	return b.waitAllRunning(ctx)
}

// showProgress shows on stderr, every few seconds, how many of total
// instances are done (created, started), until the returned stop; the
// report on out stays as it was.
func (b *bench) showProgress(ctx context.Context, what string, done *atomic.Int64, total int) (stop func()) {
	return racktest.ShowProgress(ctx, 5*time.Second, func(line string) { fmt.Fprintln(os.Stderr, line) },
		func(elapsed time.Duration) string {
			n := done.Load()
			return fmt.Sprintf("ftbench: %s %d/%d instances (%.0f/s)", what, n, total, float64(n)/elapsed.Seconds())
		})
}

func (b *bench) reportRetries() {
	b.retryMu.Lock()
	defer b.retryMu.Unlock()
	if n := b.startRetries.Swap(0); n > 0 {
		fmt.Fprintf(b.out, "  PRODUCT ISSUE: %d concurrent starts answered 500 and were sent again; first: %s\n", n, b.firstRetry)
	}
	b.firstRetry = ""
}

// restartAll starts every instance again after a round stopped them all.
func (b *bench) restartAll(ctx context.Context) error {
	began := time.Now()
	if err := b.startAll(ctx); err != nil {
		return err
	}
	fmt.Fprintf(b.out, "  (%d instances started again in %s)\n", len(b.instances), time.Since(began).Round(time.Millisecond))
	b.reportRetries()
	fmt.Fprintln(b.out)
	return nil
}

// waitAllRunning polls the instance list until every instance runs.
func (b *bench) waitAllRunning(ctx context.Context) error {
	deadline := time.Now().Add(runningBound)
	for {
		states, err := b.runStates(ctx)
		if err != nil {
			return err
		}
		notRunning := map[string]int{}
		for _, s := range states {
			if s != "running" {
				notRunning[s]++
			}
		}
		if len(states) == len(b.instances) && len(notRunning) == 0 {
			return nil
		}
		for s := range notRunning {
			if s == "failed" || s == "stopped" {
				return fmt.Errorf("instances that should be starting are %s: %v", s, notRunning)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("instances not running after %s: %v", runningBound, notRunning)
		}
		if backoff.Sleep(ctx, 100*time.Millisecond) != nil {
			return ctx.Err()
		}
	}
}

func (b *bench) runStates(ctx context.Context) (map[string]string, error) {
	type row struct {
		ID       string `json:"id"`
		RunState string `json:"run_state"`
	}
	items, err := racktest.List[row](ctx, b.api, "/v1/instances?project="+project+"&limit=1000")
	states := make(map[string]string, len(items))
	for _, it := range items {
		states[it.ID] = it.RunState
	}
	return states, err
}

func execOn(ctx context.Context, dsn, statement string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, statement); err != nil {
		return fmt.Errorf("%s: %w", statement, err)
	}
	return nil
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

var errNoStatements = errors.New("pg_stat_statements is not loaded (shared_preload_libraries)")
