package main

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"
)

// generations samples the database throughout a run: every instance's and
// VMM's state_generation, which must never go backwards (N3). The
// VMMs running per instance are sampled from the sleds (twice.go): the
// database's VMM states lag the sleds' reports, so two VMMs it records
// running at once (a migration's source whose report of migrating has
// not landed yet, and its target) are no guest running twice.
type generations struct {
	mu       sync.Mutex
	seen     map[string]int64 // "instance <id>" or "vmm <id>": the highest generation read
	samples  int
	errors   int
	backward []string
}

func newGenerations() *generations { return &generations{seen: map[string]int64{}} }

// loop samples every period until ctx ends.
func (g *generations) loop(ctx context.Context, db *sql.DB, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		g.sample(ctx, db)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample reads the generations once. A read that fails (the database is
// never faulted, but the run may be ending) is counted and skipped.
func (g *generations) sample(ctx context.Context, db *sql.DB) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, `SELECT 'instance ' || id, state_generation FROM instance
		UNION ALL SELECT 'vmm ' || id, state_generation FROM vmm`)
	if err != nil {
		g.failed()
		return
	}
	defer rows.Close()
	read := map[string]int64{}
	for rows.Next() {
		var object string
		var gen int64
		if err := rows.Scan(&object, &gen); err != nil {
			g.failed()
			return
		}
		read[object] = gen
	}
	if rows.Err() != nil {
		g.failed()
		return
	}
	g.record(read)
}

func (g *generations) failed() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.errors++
}

func (g *generations) record(read map[string]int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.samples++
	at := time.Now().Format("15:04:05.000")
	for object, gen := range read {
		if last, ok := g.seen[object]; ok && gen < last {
			g.backward = append(g.backward, fmt.Sprintf("%s: %s's generation went from %d back to %d", at, object, last, gen))
			continue
		}
		g.seen[object] = gen
	}
}
