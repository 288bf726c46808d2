package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/app"
	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/sledagent"
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
	// shows in the database counters, and well inside nexus's one-minute
	// liveness.
	heartbeatPeriod = sledconfig.Duration(20 * time.Second)
)

// bench is the rack under measurement.
type bench struct {
	opts      options
	out       io.Writer
	nexusDSN  string
	nexusDB   string // nexus's database name
	stats     *statsReader
	srv       *nexus.Server
	token     string
	client    *http.Client
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
	if err := b.startNexus(ctx, log); err != nil {
		return nil, err
	}
	if err := b.startSleds(ctx, log); err != nil {
		return nil, err
	}
	if b.token, err = b.srv.App().TokenCreate(ctx, "ftbench", []app.Grant{{FleetAdmin: true}}, 0); err != nil {
		return nil, err
	}
	idle := 2*maxOf(o.clients) + setUpConcurrency
	transport := &http.Transport{MaxIdleConns: idle, MaxIdleConnsPerHost: idle, IdleConnTimeout: 5 * time.Minute}
	b.client = &http.Client{Transport: transport, Timeout: time.Minute}
	b.onClose(transport.CloseIdleConnections)

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

func (b *bench) startNexus(ctx context.Context, log *zap.Logger) error {
	cfg := nexusconfig.Default()
	cfg.ID = uuid.NewString()
	cfg.InternalListen, cfg.ExternalListen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.DatabaseBackend, cfg.DatabaseURL = "postgres", b.nexusDSN
	cfg.InstanceWatcherPeriod, cfg.InstanceUpdaterPeriod = idleTaskPeriod, idleTaskPeriod
	cfg.ReincarnationPeriod, cfg.SledLivenessPeriod = idleTaskPeriod, idleTaskPeriod
	srv, err := nexus.New(ctx, cfg, log.Named("nexus"))
	if err != nil {
		return fmt.Errorf("starting nexus: %w", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	b.srv = srv
	b.onClose(func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
		<-served
	})
	return nil
}

func (b *bench) startSleds(ctx context.Context, log *zap.Logger) error {
	dir, err := os.MkdirTemp("", "ftbench-sleds-")
	if err != nil {
		return err
	}
	b.onClose(func() { os.RemoveAll(dir) })
	// Room for every instance on every sled, so that placement never
	// refuses one.
	ncpus, memGiB := uint32(max(64, b.opts.instances)), uint64(max(512, b.opts.instances))
	ours := map[uuid.UUID]bool{}
	for i := 0; i < b.opts.sleds; i++ {
		cfg := sledconfig.Default()
		sledDir := filepath.Join(dir, fmt.Sprintf("sled-%d", i))
		cfg.ListenAddress = "127.0.0.1:0"
		cfg.SledID = uuid.NewString()
		cfg.LedgerDirs = []string{filepath.Join(sledDir, "m2-0"), filepath.Join(sledDir, "m2-1")}
		cfg.ZoneStateDir = filepath.Join(sledDir, "zones")
		cfg.Zpools = []string{"oxp_" + uuid.NewString()}
		cfg.NCPUs, cfg.MemoryGiB = ncpus, memGiB
		cfg.NexusAddress = b.srv.InternalAddr()
		cfg.HeartbeatPeriod = heartbeatPeriod
		cfg.PublishRetryInitial, cfg.PublishRetryMax = sledconfig.Duration(5*time.Millisecond), sledconfig.Duration(100*time.Millisecond)
		cfg.HypervisorMode, cfg.VMMTransitionDelay = "auto", sledconfig.Duration(b.opts.vmmDelay)
		srv, err := sledagent.New(cfg, log.Named("sled-agent"))
		if err != nil {
			return fmt.Errorf("starting sled-agent %d: %w", i, err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve() }()
		b.onClose(func() {
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(shutdownCtx)
			<-served
		})
		ours[uuid.MustParse(cfg.SledID)] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		sleds, err := b.srv.DataStore().SledList(ctx)
		if err != nil {
			return err
		}
		registered := 0
		for _, s := range sleds {
			if !ours[s.ID] {
				return fmt.Errorf("nexus's database is not empty: it knows sled %s from an earlier run; give ftbench an empty database", s.ID)
			}
			registered++
		}
		if registered == len(ours) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d sleds registered with nexus within 30s", registered, len(ours))
		}
		if backoff.Sleep(ctx, 20*time.Millisecond) != nil {
			return ctx.Err()
		}
	}
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

type answer struct {
	status int
	body   []byte
}

// call sends one REST request as the fleet admin.
func (b *bench) call(ctx context.Context, method, path, body string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, b.srv.ExternalURL()+path, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := b.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: data}, err
}

func (b *bench) mustCall(ctx context.Context, method, path, body string, want ...int) (answer, error) {
	a, err := b.call(ctx, method, path, body)
	if err != nil {
		return a, fmt.Errorf("%s %s: %w", method, path, err)
	}
	for _, w := range want {
		if a.status == w {
			return a, nil
		}
	}
	return a, fmt.Errorf("%s %s: %d %s", method, path, a.status, a.body)
}

// parallel runs f for every index below n, at most limit at a time, and
// returns the first error.
func parallel(n, limit int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for w := 0; w < limit; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func (b *bench) createAll(ctx context.Context) error {
	if _, err := b.mustCall(ctx, http.MethodPost, "/v1/projects", `{"name": "`+project+`", "description": "ftbench"}`, http.StatusCreated); err != nil {
		return err
	}
	b.instances = make([]string, b.opts.instances)
	return parallel(b.opts.instances, setUpConcurrency, func(i int) error {
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
		if err := json.Unmarshal(a.body, &inst); err != nil || inst.ID == "" {
			return fmt.Errorf("creating %s: %s", name, a.body)
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
	err := parallel(len(b.instances), setUpConcurrency, func(i int) error {
		path := "/v1/instances/" + b.instances[i] + "/start"
		for attempt := 0; ; attempt++ {
			a, err := b.call(ctx, http.MethodPost, path, "")
			switch {
			case err != nil:
				return fmt.Errorf("POST %s: %w", path, err)
			case a.status == http.StatusAccepted || a.status == http.StatusOK:
				return nil
			case a.status == http.StatusInternalServerError && attempt < startRetryLimit:
				b.startRetries.Add(1)
				b.retryMu.Lock()
				if b.firstRetry == "" {
					b.firstRetry = strings.TrimSpace(string(a.body))
				}
				b.retryMu.Unlock()
				backoff.Sleep(ctx, time.Duration(attempt+1)*5*time.Millisecond)
			default:
				return fmt.Errorf("POST %s: %d %s", path, a.status, a.body)
			}
		}
	})
	if err != nil {
		return err
	}
	return b.waitAllRunning(ctx)
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
	states := map[string]string{}
	token := ""
	for {
		path := "/v1/instances?project=" + project + "&limit=1000"
		if token != "" {
			path += "&page_token=" + url.QueryEscape(token)
		}
		a, err := b.mustCall(ctx, http.MethodGet, path, "", http.StatusOK)
		if err != nil {
			return nil, err
		}
		var page struct {
			Items []struct {
				ID       string `json:"id"`
				RunState string `json:"run_state"`
			} `json:"items"`
			NextPage *string `json:"next_page"`
		}
		if err := json.Unmarshal(a.body, &page); err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			states[it.ID] = it.RunState
		}
		if page.NextPage == nil || *page.NextPage == "" || len(page.Items) == 0 {
			return states, nil
		}
		token = *page.NextPage
	}
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
