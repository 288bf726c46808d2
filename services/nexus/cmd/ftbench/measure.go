package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/pkg/backoff"
)

// latencies summarises one measured operation.
type latencies struct {
	count      int
	p50, p99   time.Duration
	max        time.Duration
	wall       time.Duration
	throughput float64 // per second of wall time
}

func summarize(ds []time.Duration, wall time.Duration) latencies {
	l := latencies{count: len(ds), wall: wall}
	if len(ds) == 0 {
		return l
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	rank := func(q float64) time.Duration { // nearest rank
		i := int(float64(len(sorted))*q+0.999999) - 1
		return sorted[min(max(i, 0), len(sorted)-1)]
	}
	l.p50, l.p99, l.max = rank(0.50), rank(0.99), sorted[len(sorted)-1]
	if wall > 0 {
		l.throughput = float64(len(ds)) / wall.Seconds()
	}
	return l
}

// round is what one concurrency measured.
type round struct {
	clients  int
	ft       latencies
	ftErrors int
	ftFirst  string // the first unexpected answer
	floor    latencies
	cost     dbCost
	// ftCPU and floorCPU are the CPU time each operation cost.
	ftCPU, floorCPU cpuUse
}

// dbCost is what the force-terminates of a round cost the database, per
// force-terminate; a negative figure was not measured.
type dbCost struct {
	commits, writeXacts, statements float64
	// sessions is how many connections to nexus's database were opened
	// during the round, in all (not per force-terminate).
	sessions                    int64
	commitsNote, statementsNote string
	top                         []statementCost
}

type statementCost struct {
	perFT    float64
	meanExec time.Duration
	// walBytes and walFPI are the WAL the statement wrote per call, and
	// the full-page images in it.
	walBytes, walFPI float64
	query            string
}

func (b *bench) round(ctx context.Context, c int) (round, error) {
	r := round{clients: c}
	if err := b.warmConnections(ctx, c); err != nil {
		return r, err
	}
	before := b.stats.read(ctx, b.opts.statsWait)
	ids := make(chan string, len(b.instances))
	for _, id := range b.instances {
		ids <- id
	}
	close(ids)
	var (
		mu   sync.Mutex
		lats []time.Duration
		wg   sync.WaitGroup
	)
	stopProfile, err := startCPUProfile(b.opts.cpuProfile, c)
	if err != nil {
		return r, err
	}
	cpuBefore := sampleCPU()
	began := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				start := time.Now()
				a, err := b.call(ctx, http.MethodPost, "/v1/instances/"+id+"/force-terminate", "")
				took := time.Since(start)
				problem := ""
				switch {
				case err != nil:
					problem = err.Error()
				case a.Status != http.StatusOK:
					problem = fmt.Sprintf("%d %s", a.Status, a.Body)
				default:
					var inst struct {
						RunState string `json:"run_state"`
					}
					if err := json.Unmarshal(a.Body, &inst); err != nil || inst.RunState != "stopped" {
						problem = fmt.Sprintf("200 %s", a.Body)
					}
				}
				mu.Lock()
				lats = append(lats, took)
				if problem != "" {
					r.ftErrors++
					if r.ftFirst == "" {
						r.ftFirst = problem
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.ft = summarize(lats, time.Since(began))
	r.ftCPU = per(cpuBefore, sampleCPU(), len(lats))
	if err := stopProfile(); err != nil {
		return r, err
	}
	after := b.stats.read(ctx, b.opts.statsWait)
	r.cost = cost(before, after, len(b.instances))

	floorFor := max(r.ft.wall, time.Second)
	cpuBefore = sampleCPU()
	floor, err := runFloor(ctx, b.nexusDSN, c, floorFor)
	if err != nil {
		return r, fmt.Errorf("measuring the floor: %w", err)
	}
	r.floor = floor
	r.floorCPU = per(cpuBefore, sampleCPU(), floor.count)
	b.printRound(r)
	return r, nil
}

// warmConnections opens the clients' keep-alive connections to the REST
// API before the measurement, so that no request pays for a TCP handshake.
func (b *bench) warmConnections(ctx context.Context, c int) error {
	return parallel(c, c, func(int) error {
		_, err := b.mustCall(ctx, http.MethodGet, "/v1/projects/"+project, "", http.StatusOK)
		return err
	})
}

// setUpFloor creates the floor's scratch table in its own schema, one row
// per client, shaped like nexus's VMM runtime.
func setUpFloor(ctx context.Context, db *sql.DB, rows int) error {
	for _, s := range []string{
		`DROP SCHEMA IF EXISTS ftbench_floor CASCADE`,
		`CREATE SCHEMA ftbench_floor`,
		`CREATE TABLE ftbench_floor.vmm (id TEXT PRIMARY KEY, state TEXT NOT NULL,
			state_generation BIGINT NOT NULL, time_state_updated TIMESTAMPTZ NOT NULL)`,
	} {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return err
		}
	}
	_, err := db.ExecContext(ctx, `INSERT INTO ftbench_floor.vmm (id, state, state_generation, time_state_updated)
		SELECT 'row-' || g, 'running', 1, now() FROM generate_series(0, $1 - 1) AS g`, rows)
	return err
}

const floorUpdate = `UPDATE ftbench_floor.vmm SET state = 'running', state_generation = state_generation + 1,
	time_state_updated = now() WHERE id = $1 AND state_generation = $2 RETURNING state_generation`

// runFloor runs c clients, each on its own connection and row, doing one
// guarded single-row UPDATE per autocommit transaction for d.
func runFloor(ctx context.Context, dsn string, c int, d time.Duration) (latencies, error) {
	conns := make([]*pgx.Conn, c)
	gens := make([]int64, c)
	defer func() {
		for _, conn := range conns {
			if conn != nil {
				conn.Close(context.Background())
			}
		}
	}()
	for i := range conns {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return latencies{}, err
		}
		conns[i] = conn
		if err := conn.QueryRow(ctx, `SELECT state_generation FROM ftbench_floor.vmm WHERE id = $1`,
			fmt.Sprintf("row-%d", i)).Scan(&gens[i]); err != nil {
			return latencies{}, err
		}
	}
	var (
		mu    sync.Mutex
		lats  []time.Duration
		first error
		wg    sync.WaitGroup
	)
	began := time.Now()
	deadline := began.Add(d)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, gen := fmt.Sprintf("row-%d", i), gens[i]
			var mine []time.Duration
			for time.Now().Before(deadline) {
				start := time.Now()
				err := conns[i].QueryRow(ctx, floorUpdate, id, gen).Scan(&gen)
				mine = append(mine, time.Since(start))
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("guarded update of %s at generation %d: %w", id, gen, err)
					}
					mu.Unlock()
					return
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize(lats, time.Since(began)), first
}

// statsReader reads PostgreSQL's counters for nexus's database from a
// connection to another database (the maintenance database), so that the
// reading itself is not counted.
type statsReader struct {
	db         *sql.DB
	database   string
	statements bool
	note       string // why something is not measured
}

func openStats(ctx context.Context, adminDSN, database string) *statsReader {
	s := &statsReader{database: database}
	db, err := sql.Open("pgx", adminDSN)
	if err == nil {
		err = db.PingContext(ctx)
	}
	if err != nil {
		s.note = fmt.Sprintf("database work per force-terminate not measured: cannot reach the maintenance database: %v", err)
		if db != nil {
			db.Close()
		}
		return s
	}
	db.SetMaxOpenConns(1)
	s.db = db
	var preload string
	if err := db.QueryRowContext(ctx, `SELECT current_setting('shared_preload_libraries')`).Scan(&preload); err == nil &&
		strings.Contains(preload, "pg_stat_statements") {
		if _, err := db.ExecContext(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
			s.note = fmt.Sprintf("statements (round trips) per force-terminate not measured: %v", err)
		} else {
			s.statements = true
		}
	} else {
		s.note = "statements (round trips) per force-terminate not measured: " + errNoStatements.Error() +
			"; commits are (pg_stat_database), and so are write transactions (transaction ids)"
	}
	return s
}

func (s *statsReader) close() {
	if s.db != nil {
		s.db.Close()
	}
}

type dbStats struct {
	ok          bool
	xactCommit  int64
	sessions    int64
	nextXID     int64
	statements  map[int64]statementCalls
	statsErr    error
	statementsE error
}

type statementCalls struct {
	calls int64
	// execTime is the time spent executing the statement, in all.
	execTime         time.Duration
	walBytes, walFPI int64
	query            string
}

// read waits wait, so that every backend of nexus's database has flushed
// its counters to pg_stat_database (an idle backend flushes within
// PGSTAT_IDLE_INTERVAL, 10 s), then reads them. pg_stat_statements and the
// next transaction id need no wait.
func (s *statsReader) read(ctx context.Context, wait time.Duration) dbStats {
	var st dbStats
	if s.db == nil {
		return st
	}
	backoff.Sleep(ctx, wait) //nolint:errcheck // an ended context shows in what follows
	st.statsErr = s.db.QueryRowContext(ctx, `SELECT xact_commit, sessions, pg_snapshot_xmax(pg_current_snapshot())::text::bigint
		FROM pg_stat_database WHERE datname = $1`, s.database).Scan(&st.xactCommit, &st.sessions, &st.nextXID)
	st.ok = st.statsErr == nil
	if !s.statements {
		return st
	}
	rows, err := s.db.QueryContext(ctx, `SELECT queryid, calls, total_exec_time, wal_bytes, wal_fpi, query FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)`, s.database)
	if err != nil {
		st.statementsE = err
		return st
	}
	defer rows.Close()
	st.statements = map[int64]statementCalls{}
	for rows.Next() {
		var id, calls, walBytes, walFPI int64
		var execMS float64
		var query string
		if err := rows.Scan(&id, &calls, &execMS, &walBytes, &walFPI, &query); err != nil {
			st.statementsE = err
			return st
		}
		st.statements[id] = statementCalls{calls: calls, execTime: time.Duration(execMS * float64(time.Millisecond)),
			walBytes: walBytes, walFPI: walFPI, query: query}
	}
	st.statementsE = rows.Err()
	return st
}

var spaces = regexp.MustCompile(`\s+`)

func cost(before, after dbStats, n int) dbCost {
	c := dbCost{commits: -1, writeXacts: -1, statements: -1, sessions: -1}
	switch {
	case before.statsErr != nil || after.statsErr != nil:
		c.commitsNote = fmt.Sprintf("not measured: %v", firstErr(before.statsErr, after.statsErr))
	case before.ok && after.ok:
		c.commits = float64(after.xactCommit-before.xactCommit) / float64(n)
		c.writeXacts = float64(after.nextXID-before.nextXID) / float64(n)
		c.sessions = after.sessions - before.sessions
	}
	switch {
	case before.statementsE != nil || after.statementsE != nil:
		c.statementsNote = fmt.Sprintf("not measured: %v", firstErr(before.statementsE, after.statementsE))
	case before.statements != nil && after.statements != nil:
		var total int64
		for id, a := range after.statements {
			calls := a.calls - before.statements[id].calls
			if calls <= 0 {
				continue
			}
			total += calls
			c.top = append(c.top, statementCost{perFT: float64(calls) / float64(n), query: spaces.ReplaceAllString(a.query, " "),
				meanExec: (a.execTime - before.statements[id].execTime) / time.Duration(calls),
				walBytes: float64(a.walBytes-before.statements[id].walBytes) / float64(calls),
				walFPI:   float64(a.walFPI-before.statements[id].walFPI) / float64(calls)})
		}
		c.statements = float64(total) / float64(n)
		sort.Slice(c.top, func(i, j int) bool { return c.top[i].perFT > c.top[j].perFT })
	}
	return c
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

func (b *bench) printRound(r round) {
	out := b.out
	fmt.Fprintf(out, "clients %d\n", r.clients)
	fmt.Fprintf(out, "  force-terminate  n=%-6d p50 %-9s p99 %-9s max %-9s %8.0f/s  (%s)\n", r.ft.count,
		ms(r.ft.p50), ms(r.ft.p99), ms(r.ft.max), r.ft.throughput, r.ft.wall.Round(time.Millisecond))
	fmt.Fprintf(out, "  floor UPDATE     n=%-6d p50 %-9s p99 %-9s max %-9s %8.0f/s  (%s)\n", r.floor.count,
		ms(r.floor.p50), ms(r.floor.p99), ms(r.floor.max), r.floor.throughput, r.floor.wall.Round(time.Millisecond))
	fmt.Fprintf(out, "  force-terminate throughput / floor throughput: %.1f%%\n", 100*ratio(r))
	fmt.Fprintf(out, "  CPU per force-terminate: %s\n", r.ftCPU)
	fmt.Fprintf(out, "  CPU per floor UPDATE:    %s\n", r.floorCPU)
	if r.ftErrors > 0 {
		fmt.Fprintf(out, "  UNEXPECTED ANSWERS: %d of %d force-terminates did not answer 200 stopped; first: %s\n",
			r.ftErrors, r.ft.count, r.ftFirst)
	}
	if r.cost.commits >= 0 {
		fmt.Fprintf(out, "  per force-terminate: %.2f commits (pg_stat_database xact_commit; read-only autocommit SELECTs count too), "+
			"%.2f write transactions (transaction ids taken)\n", r.cost.commits, r.cost.writeXacts)
		fmt.Fprintf(out, "  connections to nexus's database opened during the round: %d (pg_stat_database sessions)\n", r.cost.sessions)
	} else if r.cost.commitsNote != "" {
		fmt.Fprintf(out, "  commits per force-terminate %s\n", r.cost.commitsNote)
	}
	if r.cost.statements >= 0 {
		fmt.Fprintf(out, "  per force-terminate: %.2f statements = round trips (pg_stat_statements calls, BEGIN/COMMIT included), "+
			"each with its mean execution time and WAL written per call (full-page images in it):\n",
			r.cost.statements)
		for _, s := range r.cost.top {
			if s.perFT < 0.01 {
				break
			}
			q := s.query
			if len(q) > 110 {
				q = q[:107] + "..."
			}
			fmt.Fprintf(out, "    %5.2f  %6.0f µs  %7.0f B WAL (%4.1f FPI)  %s\n", s.perFT, us(s.meanExec), s.walBytes, s.walFPI, q)
		}
	} else if r.cost.statementsNote != "" {
		fmt.Fprintf(out, "  statements per force-terminate %s\n", r.cost.statementsNote)
	}
	fmt.Fprintln(out)
}

func ratio(r round) float64 {
	if r.floor.throughput == 0 {
		return 0
	}
	return r.ft.throughput / r.floor.throughput
}

func figure(x float64) string {
	if x < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", x)
}

// The targets of SPEC 6, as ratios to the floor measured in the same run:
// these machines are too noisy for absolute figures.
const (
	maxTimesFloorP50 = 2.5
	minShareOfFloor  = 0.5
)

// report prints every round in one table, then the targets of SPEC 6.
func report(out io.Writer, o options, rounds []round) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\tforce-terminates\tp50\tp99\tmax\tper s\t\tfloor updates\tp50\tp99\tmax\tper s\t\tFT/floor\tcommits/FT\twrite xacts/FT\tstatements/FT\tconnections opened\t")
	for _, r := range rounds {
		sessions := "-"
		if r.cost.sessions >= 0 {
			sessions = fmt.Sprint(r.cost.sessions)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%.0f\t\t%d\t%s\t%s\t%s\t%.0f\t\t%.1f%%\t%s\t%s\t%s\t%s\t\n", r.clients,
			r.ft.count, ms(r.ft.p50), ms(r.ft.p99), ms(r.ft.max), r.ft.throughput,
			r.floor.count, ms(r.floor.p50), ms(r.floor.p99), ms(r.floor.max), r.floor.throughput,
			100*ratio(r), figure(r.cost.commits), figure(r.cost.writeXacts), figure(r.cost.statements), sessions)
	}
	tw.Flush()
	fmt.Fprintln(out)
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT MET"
	}
	for _, r := range rounds {
		switch r.clients {
		case 1:
			times := float64(r.ft.p50) / float64(r.floor.p50)
			fmt.Fprintf(out, "target, 1 client: p50 <= %.1f x the floor's p50: %s = %.2f x %s, %s; p99 %s\n",
				maxTimesFloorP50, ms(r.ft.p50), times, ms(r.floor.p50), verdict(times <= maxTimesFloorP50), ms(r.ft.p99))
		case 64:
			fmt.Fprintf(out, "target, 64 clients: throughput >= %.0f%% of the floor's: %.1f%% (%.0f/s of %.0f/s), %s; p99 %s\n",
				100*minShareOfFloor, 100*ratio(r), r.ft.throughput, r.floor.throughput, verdict(ratio(r) >= minShareOfFloor), ms(r.ft.p99))
		}
	}
	unexpected := 0
	for _, r := range rounds {
		unexpected += r.ftErrors
	}
	if unexpected > 0 {
		fmt.Fprintf(out, "UNEXPECTED ANSWERS: %d force-terminates did not answer 200 stopped\n", unexpected)
	}
	if !slices.Contains(o.clients, 1) || !slices.Contains(o.clients, 64) {
		fmt.Fprintf(out, "(the targets are stated for 1 and 64 clients; this run measured %v)\n", o.clients)
	}
}

// startCPUProfile profiles the process into path.<clients> until the
// returned function is called; with no path it does nothing.
func startCPUProfile(path string, clients int) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", path, clients))
	if err != nil {
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}
