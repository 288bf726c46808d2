package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/pkg/settings"
	"github.com/rackplane/rackplane/pkg/testutil"
	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/racksetup"
	"github.com/rackplane/rackplane/services/racktest"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

const (
	project = "scalebench"
	// quietPeriod keeps a background task from running during the idle
	// phase (and the creation before it): a ticker's first tick is one
	// period after nexus starts.
	quietPeriod = duration.Duration(time.Hour)
	// nexusReady and sledReady are what the services log once they listen.
	nexusReady = "nexus listening"
	sledReady  = "sled-agent listening"
	// startBound bounds one process's start (its build excluded).
	startBound = time.Minute
	// sledStartsAtOnce is how many in-process sled-agents start at once.
	sledStartsAtOnce = 4
)

// bench is the rack under measurement and everything measured of it.
type bench struct {
	o        options
	out      io.Writer
	progress io.Writer
	harness  *testutil.Standalone

	backend datastore.Backend
	dbURL   string  // nexus's DSN, or its SQLite file
	db      *sql.DB // the harness's own reads of nexus's database
	rack    *racktest.Processes
	nexus   *racktest.ProcessNexus
	lost    *racktest.Process // the lost sled's sled-agent process
	lostID  uuid.UUID
	// lostListen is where the lost sled's agent listens.
	lostListen string
	agents     []*sledagenttest.Agent
	sleds      []uuid.UUID // every sled, the lost one first
	api        *racktest.Client
	fileCap    uint64

	mon   *monitor
	watch *sledWatch

	instances []string // ids of the instances measured by view, not reserved
	reserved  []string // ids of the instances started, stopped and force-terminated

	fig figures

	mu       sync.Mutex
	problems []string
}

func newBench(o options, out, progress io.Writer) *bench {
	return &bench{o: o, out: out, progress: progress, harness: testutil.NewStandalone("scalebench", nil)}
}

// do runs f, in which racktest's helpers fail through the standalone
// harness, turning such a failure into an error.
func (b *bench) do(f func()) error { return b.harness.Run(f) }

// problem records something the report must show: a figure that could not
// be measured, an answer the product should not give.
func (b *bench) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.mu.Lock()
	b.problems = append(b.problems, msg)
	b.mu.Unlock()
	b.say("PROBLEM: %s", msg)
}

// say writes a progress line on stderr.
func (b *bench) say(format string, args ...any) {
	fmt.Fprintf(b.progress, "scalebench %s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// failed adds what nexus last logged to a failure.
func (b *bench) failed(err error) error {
	if b.nexus != nil {
		lines := strings.Split(b.nexus.Log(), "\n")
		fmt.Fprintf(b.progress, "scalebench: nexus's last log lines:\n%s\n", strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
	return err
}

// raiseFileLimit raises this process's soft limit on open files to its
// hard limit: every in-process sled holds its listener and its connections
// to nexus and from it. nexus, started from here, inherits the limit.
func (b *bench) raiseFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("raising RLIMIT_NOFILE to %d: %w", lim.Max, err)
		}
	}
	b.fileCap = lim.Cur
	// About 6 descriptors a sled here (its listener, its connection to
	// nexus, nexus's to it, ledger files while writing) and some for the
	// REST clients and the database.
	if need := uint64(b.o.sleds)*6 + 256; need > lim.Cur {
		b.problem("RLIMIT_NOFILE is %d, and %d sleds need about %d open files in this process", lim.Cur, b.o.sleds, need)
	}
	return nil
}

// nexusConfig adjusts nexus's configuration for a phase: idle keeps every
// periodic task but the one-query checks (replica_check, expunge_confirm)
// from running at all; busy runs the measured tasks at --task-period and
// the others at nexus's defaults.
func (b *bench) nexusConfig(c *nexusconfig.Config, busy bool) {
	def := nexusconfig.Default()
	c.Pprof = b.o.cpuProfile != "" || b.o.trace != ""
	if b.o.hbTimeout > 0 {
		c.SledHeartbeatTimeout = duration.Duration(b.o.hbTimeout)
	}
	if !busy {
		for _, p := range []*duration.Duration{&c.InventoryPeriod, &c.ZonesPushPeriod, &c.InstanceWatcherPeriod,
			&c.InstanceUpdaterPeriod, &c.SledLivenessPeriod, &c.ReincarnationPeriod, &c.SagaReassignmentPeriod,
			&c.OrphanVMMPeriod, &c.StopWishPeriod, &c.HistoryPrunePeriod} {
			*p = quietPeriod
		}
		return
	}
	task := duration.Duration(b.o.taskPeriod)
	c.InventoryPeriod, c.ZonesPushPeriod, c.InstanceWatcherPeriod, c.InstanceUpdaterPeriod = task, task, task, task
	c.SledLivenessPeriod = def.SledLivenessPeriod
	if b.o.liveness > 0 {
		c.SledLivenessPeriod = duration.Duration(b.o.liveness)
	}
	c.ReincarnationPeriod, c.SagaReassignmentPeriod = def.ReincarnationPeriod, def.SagaReassignmentPeriod
	c.OrphanVMMPeriod, c.StopWishPeriod, c.HistoryPrunePeriod = def.OrphanVMMPeriod, def.StopWishPeriod, def.HistoryPrunePeriod
}

// busyArgs are the flags that turn the idle nexus's command line into the
// busy one's: the later flag wins.
func (b *bench) busyArgs() []string {
	idle, busy := nexusconfig.Default(), nexusconfig.Default()
	b.nexusConfig(&idle, false)
	b.nexusConfig(&busy, true)
	return settings.Args(busy, idle)
}

// perSledRoom is what every sled offers: room for several times its share
// of the instances, so that placement never refuses one for want of room.
func (b *bench) perSledRoom() uint64 {
	share := (b.o.instances + b.o.lossInstances + b.o.sleds - 1) / (b.o.sleds - 1)
	return uint64(max(64, 4*share))
}

// sledConfig adjusts a sled's configuration: sledagenttest's (fresh
// directories, two zpools, a certificate of the rack CA), pointed at
// nexus, with the sled-agent's own timings unless the flags say otherwise.
func (b *bench) sledConfig(c *sledconfig.Config) {
	def := sledconfig.Default()
	c.NexusAddress = []string{b.nexus.InternalAddr()}
	c.NCPUs, c.MemoryGiB = uint32(b.perSledRoom()), b.perSledRoom()
	c.HeartbeatPeriod, c.VMMTransitionDelay, c.HypervisorMode = def.HeartbeatPeriod, def.VMMTransitionDelay, "auto"
	if b.o.heartbeat > 0 {
		c.HeartbeatPeriod = sledconfig.Duration(b.o.heartbeat)
	}
	if b.o.vmmDelay > 0 {
		c.VMMTransitionDelay = sledconfig.Duration(b.o.vmmDelay)
	}
}

// setUp gets the database, starts nexus, the lost sled's process and the
// in-process sleds, sets the rack up from a plan, and creates the project.
func (b *bench) setUp(ctx context.Context) error {
	began := time.Now()
	if err := b.setUpDatabase(ctx); err != nil {
		return err
	}
	b.say("building and starting nexus (a process) over %s", b.backend)
	err := b.do(func() {
		b.rack = racktest.StartProcesses(b.harness, racktest.Options{Backend: b.backend, DatabaseURL: b.dbURL,
			NexusConfig: func(_ int, c *nexusconfig.Config) { b.nexusConfig(c, false) }})
		b.nexus = b.rack.Nexus(0).(*racktest.ProcessNexus)
		b.dbURL = b.rack.Database().URL
	})
	if err != nil {
		return fmt.Errorf("starting nexus: %w", err)
	}
	if err := b.openDatabase(); err != nil {
		return err
	}
	if known, err := b.rack.DataStore().SledList(ctx); err != nil {
		return err
	} else if len(known) > 0 {
		return fmt.Errorf("nexus's database is not empty: it knows %d sleds from an earlier run; give scalebench an empty database", len(known))
	}
	b.mon = newMonitor(b)
	go b.mon.loop(ctx)
	if err := b.startSleds(ctx); err != nil {
		return err
	}
	if err := b.setUpRack(ctx); err != nil {
		return err
	}
	b.api = b.rack.Client(racktest.FleetAdmin)
	pool := b.o.concurrency + b.o.reserved + 16
	b.api.HTTP.Transport = &http.Transport{MaxIdleConns: pool, MaxIdleConnsPerHost: pool, IdleConnTimeout: 5 * time.Minute}
	b.harness.Cleanup(b.api.HTTP.CloseIdleConnections)
	b.watch = newSledWatch(b)
	go b.watch.loop(ctx)
	if _, err := b.call(ctx, http.MethodPost, "/v1/projects", `{"name": "`+project+`", "description": "scalebench"}`, http.StatusCreated); err != nil {
		return err
	}
	b.fig.setup = time.Since(began)
	b.say("rack up: nexus pid %d, %d sleds registered and set up, in %s", b.nexus.Pid(), len(b.sleds), b.fig.setup.Round(time.Millisecond))
	return nil
}

// setUpDatabase starts or reaches nexus's database.
func (b *bench) setUpDatabase(ctx context.Context) error {
	if b.o.backend == "sqlite" {
		b.backend = datastore.SQLite
		b.dbURL = "" // racktest makes a fresh file in the harness's directory
		b.fig.database = "SQLite file"
		return nil
	}
	b.backend = datastore.Postgres
	if !b.o.startPostgres {
		b.dbURL = b.o.dsn
		b.fig.database = "PostgreSQL at --dsn"
		return nil
	}
	b.say("starting a throwaway PostgreSQL server (fsync on)")
	admin, stop, err := pgtest.StartServer(pgtest.ServerOptions{Durable: true, Settings: []string{"max_connections=200"}})
	if err != nil {
		return fmt.Errorf("starting PostgreSQL: %w", err)
	}
	b.harness.Cleanup(stop)
	db, err := sql.Open("pgx", admin)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE scalebench_nexus"); err != nil {
		return fmt.Errorf("creating nexus's database: %w", err)
	}
	b.dbURL = pgtest.WithDatabase(admin, "scalebench_nexus")
	b.fig.database = "PostgreSQL, a throwaway local server (fsync on)"
	return nil
}

// openDatabase opens the harness's own handle on nexus's database, for the
// placement checks and the figures.
func (b *bench) openDatabase() error {
	driver, dsn := "pgx", b.dbURL
	if b.backend == datastore.SQLite {
		driver, dsn = "sqlite", "file:"+b.dbURL+"?_pragma=busy_timeout(10000)"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(2)
	b.db = db
	b.harness.Cleanup(func() { db.Close() })
	if b.backend == datastore.Postgres {
		var version string
		if err := db.QueryRow(`SELECT current_setting('server_version')`).Scan(&version); err == nil {
			b.fig.database += ", PostgreSQL " + version
		}
	}
	return nil
}

// startSleds starts the lost sled's sled-agent process and the others in
// this process, and waits until nexus knows them all.
func (b *bench) startSleds(ctx context.Context) error {
	b.say("starting %d sled-agents: 1 process (the sled to be lost) and %d in this process", b.o.sleds, b.o.sleds-1)
	var lostCfg sledconfig.Config
	err := b.do(func() {
		lostCfg = sledagenttest.Config(b.harness)
		b.sledConfig(&lostCfg)
		lostCfg.ListenAddress = racktest.FreeAddrs(b.harness, 1)[0]
		bin := racktest.Build(b.harness, racktest.SledAgentBinary)
		b.lost = racktest.StartProcess(b.harness, "lost-sled", bin, lostCfg.Args()...)
		b.lost.WaitLog(sledReady, startBound, nil)
	})
	if err != nil {
		return fmt.Errorf("starting the lost sled's sled-agent: %w", err)
	}
	b.lostID, b.lostListen = uuid.MustParse(lostCfg.SledID), lostCfg.ListenAddress
	b.fig.lostSled = b.lostID.String()
	b.fig.zpools = map[uuid.UUID][]string{b.lostID: lostCfg.Zpools}
	log, err := b.sledLogger()
	if err != nil {
		return err
	}
	agents := make([]*sledagenttest.Agent, b.o.sleds-1)
	next := make(chan int)
	errs := make(chan error, len(agents))
	var wg sync.WaitGroup
	for range sledStartsAtOnce {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs <- b.do(func() { agents[i] = sledagenttest.StartLogged(b.harness, log, b.sledConfig) })
			}
		}()
	}
	lastSaid := time.Now()
	for i := range agents {
		next <- i
		if time.Since(lastSaid) > 5*time.Second {
			b.say("  %d/%d sled-agents started", i, len(agents))
			lastSaid = time.Now()
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return fmt.Errorf("starting a sled-agent: %w", err)
		}
	}
	b.agents = agents
	b.sleds = []uuid.UUID{b.lostID}
	for _, a := range agents {
		id := uuid.MustParse(a.Config.SledID)
		b.sleds = append(b.sleds, id)
		b.fig.zpools[id] = a.Config.Zpools
	}
	bound := 2*time.Minute + time.Duration(b.o.sleds)*50*time.Millisecond
	return testutil.Poll(bound, func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		known, err := b.rack.DataStore().SledList(ctx)
		if err != nil {
			return err
		}
		if len(known) < len(b.sleds) {
			return fmt.Errorf("%d of %d sleds have registered with nexus", len(known), len(b.sleds))
		}
		return nil
	})
}

// sledLogger is the in-process sled-agents' logger: warnings and errors to
// --sled-log, or nothing.
func (b *bench) sledLogger() (*zap.Logger, error) {
	if b.o.sledLog == "" {
		return zap.NewNop(), nil
	}
	f, err := os.Create(b.o.sledLog)
	if err != nil {
		return nil, err
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(f), zap.WarnLevel))
	b.harness.Cleanup(func() { log.Sync(); f.Close() }) //nolint:errcheck // best effort
	return log, nil
}

// setUpRack records the rack's plan, as an operator does (Z11): every sled
// gets a first zones config (an internal NTP zone, a crucible zone on each
// pool), the nexus replica is a zone of the first in-process sled, and each
// config is pushed. Nexus owns the configs from then on (Z9), so that its
// zones push and inventory passes have work on every sled.
func (b *bench) setUpRack(ctx context.Context) error {
	began := time.Now()
	plan := racksetup.Plan{Database: racksetup.Database{Backend: string(b.backend), URL: b.dbURL}}
	addrs := map[uuid.UUID]string{b.lostID: b.lostListen}
	for _, a := range b.agents {
		addrs[uuid.MustParse(a.Config.SledID)] = a.Server.Addr()
	}
	for i, id := range b.sleds {
		addr := addrs[id]
		pools := b.fig.zpools[id]
		s := racksetup.Sled{ID: id.String(), Address: addr}
		s.Zones = append(s.Zones, racksetup.Zone{ID: uuid.NewString(), Kind: "internal_ntp", Pool: pools[0],
			Address: fmt.Sprintf("[fd00:1122:3344:%x::1]:123", 0x100+i)})
		for k, pool := range pools {
			s.Zones = append(s.Zones, racksetup.Zone{ID: uuid.NewString(), Kind: "crucible", Pool: pool,
				Address: fmt.Sprintf("[fd00:1122:3344:%x::%x]:32345", 0x100+i, 0x10+k)})
		}
		if i == 1 {
			s.Zones = append(s.Zones, racksetup.Zone{ID: b.nexus.ID().String(), Kind: model.ZoneNexus, Pool: pools[0],
				Address: b.nexus.InternalAddr(), Nexus: &racksetup.NexusListeners{
					ExternalAddress: strings.TrimPrefix(b.nexus.ExternalURL(), "http://"),
					MetricsAddress:  strings.TrimPrefix(b.nexus.MetricsURL(), "http://")}})
		}
		plan.Sleds = append(plan.Sleds, s)
	}
	var err error
	if doErr := b.do(func() {
		_, err = racksetup.Run(ctx, plan, racksetup.Options{ReadyBound: 2*time.Minute + time.Duration(b.o.sleds)*100*time.Millisecond,
			Trust: rackpkitest.For(b.harness).Operator()})
	}); doErr != nil {
		return doErr
	}
	if err != nil {
		return fmt.Errorf("rack setup: %w", err)
	}
	b.fig.rackSetup = time.Since(began)
	return nil
}

// keep leaves the rack running until ctx ends (Ctrl-C).
func (b *bench) keep(ctx context.Context) {
	fmt.Fprintf(b.out, "\nThe rack keeps running until Ctrl-C:\n  REST API  %s\n  token     %s\n  metrics   %s/metrics\n  nexus pid %d\n",
		b.nexus.ExternalURL(), b.api.Token, b.nexus.MetricsURL(), b.nexus.Pid())
	fmt.Fprintf(b.out, "  curl -H 'Authorization: Bearer %s' '%s/v1/system/hardware/sleds?limit=10'\n", b.api.Token, b.nexus.ExternalURL())
	<-ctx.Done()
}
