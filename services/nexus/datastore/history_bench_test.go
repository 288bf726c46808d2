package datastore_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

// The benchmark of SPEC N14: an instance start, the instance watcher's
// listing, an instance listing and the open-saga listing cost the same
// with 100,000 ended VMMs (and resolved migrations, and finished sagas
// with their logs) in the database as with none. Two racks are set up
// side by side, one empty and one with history, with the same live
// instances; every iteration does each operation once on each, in
// alternating order, so both see the same machine at the same moment
// (SPEC 6: a ratio to a floor measured in the same run). It reports, per
// operation, p50 and p99 on each rack (…_us, …_hist_us) and their ratios
// history/empty (…_ratio).
//
//	go test ./services/nexus/datastore/ -run '^$' -bench BenchmarkN14 -benchtime 500x
//
// -short inserts 1,000 ended VMMs instead, as a smoke test of the harness.
func BenchmarkN14_StartLatencyWithHistory(b *testing.B) {
	for _, backend := range racktest.Backends {
		b.Run(string(backend), func(b *testing.B) {
			ended := 100_000
			if testing.Short() {
				ended = 1_000
			}
			racks := []*benchRack{newBenchRack(b, backend, 0), newBenchRack(b, backend, ended)}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k := range racks {
					racks[(i+k)%2].iteration(b, i)
				}
			}
			b.StopTimer()
			for _, op := range benchOps {
				empty, hist := racks[0].latency[op], racks[1].latency[op]
				for _, q := range []struct {
					name string
					at   float64
				}{{"p50", 0.50}, {"p99", 0.99}} {
					e, h := percentile(empty, q.at), percentile(hist, q.at)
					b.ReportMetric(float64(e.Microseconds()), op+"_"+q.name+"_us")
					b.ReportMetric(float64(h.Microseconds()), op+"_"+q.name+"_hist_us")
					b.ReportMetric(float64(h)/float64(max(e, 1)), op+"_"+q.name+"_ratio")
				}
			}
		})
	}
}

// What the benchmark times: alloc is the placement alone (VMMAllocate),
// start what the start saga's database work is (read the instance, place
// its VMM, link it), watch the instance watcher's listing, list a page of
// a project's instances, sagas the operator's listing of open sagas.
var benchOps = []string{"alloc", "start", "watch", "list", "sagas"}

const (
	benchSleds = 16
	// benchLive running instances, each with its VMM, on both racks.
	benchLive = 64
)

type benchRack struct {
	ds      *datastore.DataStore
	project uuid.UUID
	latency map[string][]time.Duration
}

func newBenchRack(b *testing.B, backend datastore.Backend, ended int) *benchRack {
	b.Helper()
	ds := racktest.NewDatabase(b, backend).Open(b)
	r := &benchRack{ds: ds, latency: map[string][]time.Duration{}}
	p := model.Project{ID: uuid.New(), Name: "bench", Description: "", TimeCreated: time.Now()}
	if err := ds.ProjectCreate(ctx, p); err != nil {
		b.Fatal(err)
	}
	r.project = p.ID
	var sleds []uuid.UUID
	for i := range benchSleds {
		s := model.Sled{ID: uuid.New(), Address: fmt.Sprintf("127.0.0.1:%d", 1000+i), NCPUs: 1 << 20,
			MemoryBytes: 1 << 50, Zpools: []string{"oxp_a"}, TimeLastSeen: time.Now().Add(time.Hour)}
		if err := ds.SledUpsert(ctx, s); err != nil {
			b.Fatal(err)
		}
		sleds = append(sleds, s.ID)
	}
	if ended > 0 {
		if _, err := ds.InsertHistory(ctx, datastore.History{Project: p.ID, Sleds: sleds, VMMs: ended,
			Migrations: ended / 10, Sagas: ended / 4, EventsPerSaga: 4,
			Ended: time.Now().Add(-30 * 24 * time.Hour)}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range benchLive {
		inst := r.create(b, fmt.Sprintf("live-%d", i))
		r.start(b, inst)
	}
	return r
}

// create makes a stopped instance.
func (r *benchRack) create(b *testing.B, name string) model.Instance {
	now := time.Now()
	inst := model.Instance{ID: uuid.New(), ProjectID: r.project, Name: name, Hostname: name, NCPUs: 2, MemoryBytes: 4 << 30,
		Runtime:       model.InstanceRuntime{State: model.InstanceNoVMM, Generation: 1, TimeUpdated: now},
		IntendedState: model.IntendRunning, AutoRestartPolicy: model.AutoRestartNever, TimeCreated: now}
	if err := r.ds.InstanceCreate(ctx, inst); err != nil {
		b.Fatal(err)
	}
	return inst
}

// start does the start saga's database work for inst (N7): read it, place
// a VMM, link it. It returns the instance as linked and the placement's
// time alone.
func (r *benchRack) start(b *testing.B, inst model.Instance) (model.Instance, time.Duration) {
	got, err := r.ds.InstanceGet(ctx, inst.ID)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	v := model.VMM{ID: uuid.New(), InstanceID: inst.ID, TimeCreated: now,
		Runtime: model.VMMRuntime{State: model.VMMCreating, Generation: 1, TimeUpdated: now}}
	began := time.Now()
	if _, err := r.ds.VMMAllocate(ctx, v, got.NCPUs, got.MemoryBytes, time.Since(now.Add(-time.Minute))); err != nil {
		b.Fatal(err)
	}
	alloc := time.Since(began)
	next := got.Runtime.Next(time.Now())
	next.State, next.ActiveVMM = model.InstanceVMM, &v.ID
	if wrote, err := r.ds.InstanceUpdateRuntime(ctx, inst.ID, next); err != nil || !wrote {
		b.Fatalf("linking the VMM: %v, %v", wrote, err)
	}
	got.Runtime = next
	return got, alloc
}

// iteration times each operation once; what it starts, it then ends and
// deletes (untimed), so that the live set stays the same and the history
// grows alike on both racks.
func (r *benchRack) iteration(b *testing.B, i int) {
	inst := r.create(b, fmt.Sprintf("it-%d", i))
	began := time.Now()
	inst, alloc := r.start(b, inst)
	r.latency["start"] = append(r.latency["start"], time.Since(began))
	r.latency["alloc"] = append(r.latency["alloc"], alloc)

	r.time("watch", func() error { _, err := r.ds.VMMListActive(ctx); return err }, b)
	r.time("list", func() error {
		_, err := r.ds.InstanceList(ctx, r.project, datastore.ByNameAscending, "", 100)
		return err
	}, b)
	r.time("sagas", func() error { _, err := r.ds.SagaListOpen(ctx); return err }, b)

	now := time.Now()
	if _, err := r.ds.VMMUpdateRuntime(ctx, *inst.Runtime.ActiveVMM, model.VMMRuntime{State: model.VMMDestroyed,
		Generation: 2, TimeUpdated: now}); err != nil {
		b.Fatal(err)
	}
	next := inst.Runtime.Next(now)
	next.State, next.ActiveVMM = model.InstanceNoVMM, nil
	if _, err := r.ds.InstanceUpdateRuntime(ctx, inst.ID, next); err != nil {
		b.Fatal(err)
	}
	if _, err := r.ds.InstanceDelete(ctx, inst.ID, next.Generation, now); err != nil {
		b.Fatal(err)
	}
}

func (r *benchRack) time(op string, fn func() error, b *testing.B) {
	began := time.Now()
	if err := fn(); err != nil {
		b.Fatal(err)
	}
	r.latency[op] = append(r.latency[op], time.Since(began))
}

// percentile is the nearest-rank percentile of samples.
func percentile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
