package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/pgfailover"
	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/pkg/settings"
	"github.com/rackplane/rackplane/pkg/testutil"
	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/racktest/chaos"
)

const (
	project = "chaos"
	// replicas and sleds are the rack of issue 18: 3 sleds, each the zone
	// of one nexus replica.
	replicas = 3
	sleds    = 3
	// createBound bounds the creation of the instances and their settling
	// before the run.
	createBound = 2 * time.Minute
)

// harness is the rack under test and everything recorded of it.
type harness struct {
	o        options
	progress io.Writer
	tb       *testutil.Standalone

	rack *racktest.Processes
	dsn  string
	// formation is the database when the run injects db-failover; nil
	// otherwise.
	formation *pgfailover.Formation
	db        *sql.DB // the harness's own reads of nexus's database
	// dbLinks are each replica's link to the database, a proxy the
	// harness cuts for db-partition; nil when the run injects none.
	dbLinks []*racktest.Proxy
	sledIDs []string
	// apis are a fleet admin's REST clients, one per replica.
	apis []*racktest.Client

	history *chaos.History
	// expunged is the replica the run expunged (--expunge), -1 until then.
	expunged atomic.Int32
	mu       sync.Mutex
	// instances are the tracked instances' ids.
	instances []string

	faults *faultLog
	gens   *generations
	twice  *twiceWatch
	// answers are answers the product should not give, found by the
	// clients (a 2xx without a run_state); guarded by mu.
	answers []string
	// failovers are the db-failover faults as measured, and probed the
	// projects their probes saw acknowledged; guarded by mu.
	failovers []failover
	probed    []string
}

func newHarness(o options, progress io.Writer) *harness {
	h := &harness{o: o, progress: progress, tb: testutil.NewStandalone("chaos", nil), faults: &faultLog{},
		gens: newGenerations(), twice: &twiceWatch{}}
	h.expunged.Store(-1)
	return h
}

// do runs f, in which racktest's helpers fail through the standalone
// harness, turning such a failure into an error. A goroutine of its own
// must call it: the failure unwinds the calling goroutine.
func (h *harness) do(f func()) error { return h.tb.Run(f) }

// say writes a progress line.
func (h *harness) say(format string, args ...any) {
	fmt.Fprintf(h.progress, "chaos %s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// nexusArgs are the replicas' flags: short periods, so that the
// background work a fault leaves (a failed VMM to notice, an orphan to
// unregister, a stop wish to carry out, a failed instance to
// reincarnate) happens within a run, and force-terminate gives up on an
// unreachable sled within a call's bound.
func nexusArgs() []string {
	c := nexusconfig.Default()
	second := duration.Duration(time.Second)
	c.InstanceWatcherPeriod, c.InstanceUpdaterPeriod, c.ReincarnationPeriod = second, second, second
	c.ReincarnationCooldown = duration.Duration(3 * time.Second)
	c.SledLivenessPeriod, c.SledHeartbeatTimeout = second, duration.Duration(3*time.Second)
	c.InventoryPeriod, c.ZonesPushPeriod, c.SagaReassignmentPeriod = 2*second, 5*second, 2*second
	c.OrphanVMMPeriod, c.StopWishPeriod = 2*second, 2*second
	c.SledUnreachableBound, c.UpdaterLockWaitBound = 3*second, 5*second
	return settings.Args(c, nexusconfig.Default())
}

// setUp gets the database and starts the rack: 3 sleds, each behind a
// proxy, with a nexus replica as a zone of each.
func (h *harness) setUp(ctx context.Context) error {
	began := time.Now()
	if err := h.setUpDatabase(ctx); err != nil {
		return err
	}
	h.say("building and starting 3 sled-agents with a nexus zone each, over PostgreSQL")
	args := map[int][]string{}
	for i := range replicas {
		args[i] = nexusArgs()
	}
	err := h.do(func() {
		if slices.Contains(h.o.faults, faultDBPartition) {
			for i := range replicas {
				link, dsn := h.databaseLink()
				h.dbLinks = append(h.dbLinks, link)
				args[i] = append(args[i], "--database-url="+dsn)
			}
		}
		h.rack = racktest.StartProcesses(h.tb, racktest.Options{Backend: datastore.Postgres, DatabaseURL: h.dsn,
			Nexuses: replicas, Sleds: sleds, ZoneRuntime: "process", SledProxies: true, NexusZoneArgs: args})
		for _, n := range h.rack.Nexuses() {
			api := racktest.NewClient(n.ExternalURL(), h.rack.Token(racktest.FleetAdmin))
			h.tb.Cleanup(api.HTTP.CloseIdleConnections)
			h.apis = append(h.apis, api)
		}
		for _, s := range h.rack.Sleds() {
			h.sledIDs = append(h.sledIDs, s.ID().String())
		}
	})
	if err != nil {
		return err
	}
	db, err := sql.Open("pgx", h.dsn)
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(4)
	h.db = db
	h.tb.Cleanup(func() { db.Close() })
	if _, err := h.apis[0].Expect(ctx, http.MethodPost, "/v1/projects", `{"name": "`+project+`", "description": "R1"}`,
		http.StatusCreated); err != nil {
		return err
	}
	h.say("rack up in %s: replicas %v on sleds %v", time.Since(began).Round(time.Millisecond), h.replicaIDs(), h.sledIDs)
	return nil
}

// databaseLink starts a proxy to the database's one server and returns
// it with the DSN that reaches the database through it. A flag of the
// replica's zone command carries that DSN, over the one rack setup gave
// every zone.
func (h *harness) databaseLink() (*racktest.Proxy, string) {
	u, err := url.Parse(h.dsn)
	if err != nil || u.Host == "" || strings.Contains(u.Host, ",") {
		h.tb.Fatalf("db-partition needs a DSN naming one server as a URL, got %q (%v)", h.dsn, err)
	}
	link := racktest.StartProxy(h.tb, racktest.FreeAddrs(h.tb, 1)[0], u.Host)
	u.Host = link.Addr()
	return link, u.String()
}

func (h *harness) replicaIDs() []string {
	var ids []string
	for _, n := range h.rack.Nexuses() {
		ids = append(ids, n.ID().String())
	}
	return ids
}

// setUpDatabase reaches --dsn, or starts a throwaway server: a
// pg_auto_failover formation (a primary and a synchronous standby) when
// the run injects db-failover.
func (h *harness) setUpDatabase(ctx context.Context) error {
	if h.o.dsn != "" {
		h.dsn = h.o.dsn
		return nil
	}
	if slices.Contains(h.o.faults, faultDBFailover) {
		h.say("starting a pg_auto_failover formation: a monitor, a primary and a synchronous standby")
		return h.do(func() {
			h.formation = pgfailover.Start(h.tb)
			h.dsn = h.formation.DSN()
		})
	}
	h.say("starting a throwaway PostgreSQL server")
	admin, stop, err := pgtest.StartServer(pgtest.ServerOptions{Settings: []string{"max_connections=200"}})
	if err != nil {
		return fmt.Errorf("starting PostgreSQL (or give --dsn): %w", err)
	}
	h.tb.Cleanup(stop)
	db, err := sql.Open("pgx", admin)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE chaos_nexus"); err != nil {
		return fmt.Errorf("creating nexus's database: %w", err)
	}
	h.dsn = pgtest.WithDatabase(admin, "chaos_nexus")
	return nil
}

// instanceJSON is what the harness reads of an instance.
type instanceJSON struct {
	ID                string `json:"id"`
	RunState          string `json:"run_state"`
	AutoRestartPolicy string `json:"auto_restart_policy"`
}

// createInstances creates the instances, every other one reincarnating
// (best_effort) and two of three started, waits until each has settled
// (running or stopped), and tracks it in a new history.
func (h *harness) createInstances(ctx context.Context) error {
	rnd := rand.New(rand.NewPCG(h.o.seed, 0))
	h.history = chaos.NewHistory()
	var wg sync.WaitGroup
	errs := make([]error, h.o.instances)
	for i := range h.o.instances {
		policy := "never"
		if i%2 == 0 {
			policy = "best_effort"
		}
		start := i%3 != 2
		api := h.apis[rnd.IntN(len(h.apis))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.createOne(ctx, api, fmt.Sprintf("vm-%d", i), policy, start)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	h.say("%d instances created and tracked: %v", len(h.instances), h.instances)
	return nil
}

func (h *harness) createOne(ctx context.Context, api *racktest.Client, name, policy string, start bool) error {
	resp, err := api.Expect(ctx, http.MethodPost, "/v1/instances?project="+project, fmt.Sprintf(
		`{"name": %q, "description": "", "hostname": %q, "ncpus": 1, "memory": 1073741824, "start": %t, "auto_restart_policy": %q}`,
		name, name, start, policy), http.StatusCreated)
	if err != nil {
		return err
	}
	var inst instanceJSON
	if err := resp.JSON(&inst); err != nil {
		return err
	}
	want := "stopped"
	if start {
		want = "running"
	}
	if err := testutil.Poll(createBound, func() error {
		r, err := api.Expect(ctx, http.MethodGet, "/v1/instances/"+inst.ID, "", http.StatusOK)
		if err == nil {
			err = r.JSON(&inst)
		}
		if err == nil && inst.RunState != want {
			err = fmt.Errorf("instance %s is %s, want %s", name, inst.RunState, want)
		}
		return err
	}); err != nil {
		return err
	}
	if err := h.history.Track(inst.ID, inst.RunState, policy == "best_effort"); err != nil {
		return err
	}
	h.mu.Lock()
	h.instances = append(h.instances, inst.ID)
	h.mu.Unlock()
	return nil
}

// listInstances is the project's instances through api: one page, which
// holds them all.
func listInstances(ctx context.Context, api *racktest.Client) ([]instanceJSON, error) {
	resp, err := api.Expect(ctx, http.MethodGet, "/v1/instances?project="+project+"&limit=100", "", http.StatusOK)
	if err != nil {
		return nil, err
	}
	var page struct {
		Items []instanceJSON `json:"items"`
	}
	if err := json.Unmarshal(resp.Body, &page); err != nil {
		return nil, fmt.Errorf("the instance list: %w", err)
	}
	return page.Items, nil
}
