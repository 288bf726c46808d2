package datastore_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

// N14 with several replicas (X1): passes run at once from four handles on
// one database (on PostgreSQL, READ COMMITTED) delete each row of a
// history of many batches exactly once, without an error (no deadlock, no
// foreign-key violation), and leave nothing for a further pass.
func TestN14_ConcurrentPrunesDeleteEveryRowOnce(t *testing.T) {
	racktest.ForEachBackend(t, func(t *testing.T, db racktest.Database) {
		ds := db.Open(t)
		p, s := fixture(t, ds)
		datastore.SetPruneBatches(t, 40, 8)
		const vmms, migrations, sagas, events = 500, 60, 90, 4
		if _, err := ds.InsertHistory(ctx, datastore.History{Project: p.ID, Sleds: []uuid.UUID{s.ID}, VMMs: vmms,
			Migrations: migrations, Sagas: sagas, EventsPerSaga: events, Ended: now.Add(-30 * 24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var (
			mu     sync.Mutex
			total  [4]int64
			passes sync.WaitGroup
		)
		for range 4 {
			replica := db.Open(t)
			passes.Add(1)
			go func() {
				defer passes.Done()
				p, err := replica.PruneHistory(ctx, now)
				if err != nil {
					t.Errorf("a pass alongside others: %v", err)
				}
				mu.Lock()
				defer mu.Unlock()
				for i, n := range counts(p) {
					total[i] += n
				}
			}()
		}
		passes.Wait()
		if want := [4]int64{sagas, sagas * events, vmms, migrations}; total != want {
			t.Fatalf("four passes at once pruned %v in all, want each row once: %v", total, want)
		}
		if again := counts(prune(t, ds, now)); again != [4]int64{} {
			t.Fatalf("a pass after them pruned %v, want nothing", again)
		}
		for _, table := range []string{"vmm", "migration", "saga", "saga_node_event"} {
			if n, err := ds.CountRows(ctx, table); err != nil || n != 0 {
				t.Errorf("%s keeps %d rows (%v), want none", table, n, err)
			}
		}
	})
}

// N14: placement (on any sled or on one) and the instance watcher read the
// live VMMs only, and their instances, however many ended VMMs (and
// deleted instances) are kept. PostgreSQL runs each query under EXPLAIN
// ANALYZE and counts the vmm and instance rows its plan read (returned, or
// read and then filtered out); SQLite's plan must reach vmm through a
// live-VMM index, and instance by its key only. Before, placement read
// every VMM each sled ever ran, three times, and the watcher scanned the
// table.
func TestN14_HotPathsReadOnlyLiveVMMs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		p, first := fixture(t, ds)
		sleds := []uuid.UUID{first.ID}
		for i := range 99 {
			s := model.Sled{ID: uuid.New(), Address: fmt.Sprintf("127.0.0.1:%d", 2+i), NCPUs: 64, MemoryBytes: 512 << 30,
				Zpools: []string{"oxp_a"}, TimeLastSeen: now}
			if err := ds.SledUpsert(ctx, s); err != nil {
				t.Fatal(err)
			}
			sleds = append(sleds, s.ID)
		}
		// PostgreSQL plans by its statistics: history enough that reading
		// all of it looks no cheaper than an index. SQLite plans by its
		// indexes alone.
		ended, live := 5000, 8
		if ds.Backend() == datastore.SQLite {
			ended = 200
		}
		if _, err := ds.InsertHistory(ctx, datastore.History{Project: p.ID, Sleds: sleds, VMMs: ended,
			Ended: now.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for i := range live {
			inst := newInstance(p.ID, fmt.Sprintf("live-%d", i))
			v := uuid.New()
			inst.Runtime.State, inst.Runtime.ActiveVMM = model.InstanceVMM, &v
			if err := ds.InstanceCreate(ctx, inst); err != nil {
				t.Fatal(err)
			}
			if err := ds.VMMInsert(ctx, model.VMM{ID: v, InstanceID: inst.ID, SledID: sleds[i%len(sleds)], TimeCreated: now,
				Runtime: model.VMMRuntime{State: model.VMMRunning, Generation: 2, TimeUpdated: now}}); err != nil {
				t.Fatal(err)
			}
		}
		// Heartbeats keep moving every sled's last-seen time past what
		// ANALYZE saw: placement must not take its statistics to mean
		// that hardly any sled is live (it then summed the live VMMs once
		// per sled).
		if err := ds.Analyze(ctx); err != nil {
			t.Fatal(err)
		}
		seen := now.Add(time.Hour)
		heard := map[uuid.UUID]time.Time{}
		for _, id := range sleds {
			heard[id] = seen
		}
		if _, err := ds.SledsSeen(ctx, heard); err != nil {
			t.Fatal(err)
		}
		for _, q := range ds.HotQueries(first.ID, seen.Add(-time.Minute)) {
			plan, err := ds.Explain(ctx, q.SQL, q.Args...)
			if err != nil {
				t.Fatalf("%s: %v", q.Name, err)
			}
			if ds.Backend() == datastore.Postgres {
				for _, node := range relationNodes(t, plan[0], "sled") {
					if planned, actual := planNum(node, "Plan Rows"), planNum(node, "Actual Rows"); q.Name == "placement" && planned*10 < actual {
						t.Errorf("placement expected %d live sleds of the %d it found: the statistics of time_last_seen misled it", planned, actual)
					}
				}
				for _, table := range []string{"vmm", "instance"} {
					if read, how := rowsRead(t, plan[0], table); read > 2*live {
						t.Errorf("%s read %d %s rows (%s) with %d live VMMs among %d; want at most %d",
							q.Name, read, table, how, live, live+ended, 2*live)
					}
				}
				continue
			}
			touched := false
			for _, line := range plan {
				f := strings.Fields(line)
				if len(f) < 2 || (f[0] != "SCAN" && f[0] != "SEARCH") {
					continue
				}
				switch f[1] {
				case "vmm", "m":
					touched = true
					if !strings.Contains(line, "INDEX vmm_live_by_") {
						t.Errorf("%s reaches vmm as %q, not through a live-VMM index; plan:\n%s", q.Name, line, strings.Join(plan, "\n"))
					}
				case "instance", "i":
					if f[0] != "SEARCH" || !strings.Contains(line, "(id=?)") {
						t.Errorf("%s reaches instance as %q, not by its key; plan:\n%s", q.Name, line, strings.Join(plan, "\n"))
					}
				}
			}
			if !touched {
				t.Errorf("%s: no access to vmm in the plan:\n%s", q.Name, strings.Join(plan, "\n"))
			}
		}
	})
}

// rowsRead sums, over the nodes of a PostgreSQL JSON plan that read
// table, the rows each returned or filtered out, times its loops, and says
// how each read.
func rowsRead(t *testing.T, planJSON, table string) (int, string) {
	t.Helper()
	var (
		read int
		how  []string
	)
	for _, node := range relationNodes(t, planJSON, table) {
		rows := planNum(node, "Actual Rows") + planNum(node, "Rows Removed by Filter") + planNum(node, "Rows Removed by Index Recheck")
		read += rows * max(planNum(node, "Actual Loops"), 1)
		how = append(how, fmt.Sprintf("%v %v: %d rows x %d loops", node["Node Type"], node["Index Name"], rows, planNum(node, "Actual Loops")))
	}
	return read, strings.Join(how, "; ")
}

// relationNodes are the nodes of an EXPLAIN (FORMAT JSON) plan that read
// table.
func relationNodes(t *testing.T, planJSON, table string) []map[string]any {
	t.Helper()
	var plans []struct{ Plan map[string]any }
	if err := json.Unmarshal([]byte(planJSON), &plans); err != nil || len(plans) != 1 {
		t.Fatalf("plan %s: %v", planJSON, err)
	}
	var (
		nodes []map[string]any
		walk  func(node map[string]any)
	)
	walk = func(node map[string]any) {
		if node["Relation Name"] == table {
			nodes = append(nodes, node)
		}
		children, _ := node["Plans"].([]any)
		for _, c := range children {
			if child, ok := c.(map[string]any); ok {
				walk(child)
			}
		}
	}
	walk(plans[0].Plan)
	return nodes
}

func planNum(node map[string]any, key string) int {
	v, _ := node[key].(float64)
	return int(v)
}
