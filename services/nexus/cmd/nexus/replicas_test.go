package main

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/racktest"
)

// X1: five nexus replicas started at the same instant on one empty
// PostgreSQL database all come up (the schema is migrated once, under a
// lock), twenty times in a row.
func TestX1_FiveReplicasStartedAtTheSameInstantOnAnEmptyDatabaseAllComeUp(t *testing.T) {
	const replicas, rounds = 5, 20
	bin := racktest.Build(t, racktest.NexusBinary)
	var each, slowest []time.Duration
	for round := range rounds {
		db := racktest.NewDatabase(t, datastore.Postgres)
		procs := make([]*racktest.Process, replicas)
		for i := range procs {
			a := racktest.FreeAddrs(t, 4)
			cfg := config.Default()
			cfg.ID, cfg.DatabaseBackend, cfg.DatabaseURL = uuid.NewString(), string(db.Backend), db.URL
			cfg.InternalListen, cfg.ExternalListen, cfg.ExternalGRPCListen, cfg.MetricsListen = a[0], a[1], a[2], a[3]
			cfg.TLSDir = rackpkitest.For(t).Member(rackpki.Identity{Kind: rackpki.Nexus, ID: cfg.ID})
			procs[i] = racktest.NewProcess(t, fmt.Sprintf("round-%d-nexus-%d", round, i), bin, cfg.Args()...)
		}
		began := time.Now()
		for _, p := range procs {
			p.Start()
		}
		var last time.Duration
		for _, p := range procs {
			p.WaitLog("nexus listening", 30*time.Second, nil)
			took := time.Since(began)
			each = append(each, took)
			last = max(last, took)
		}
		slowest = append(slowest, last)
		for _, p := range procs {
			p.Kill()
		}
	}
	slices.Sort(each)
	slices.Sort(slowest)
	t.Logf("%d rounds of %d replicas started at once on an empty database: all came up; a replica listening after p50 %s, p99 %s, max %s; the last of a round after p50 %s, max %s",
		rounds, replicas, each[len(each)/2].Round(time.Millisecond), each[len(each)*99/100].Round(time.Millisecond),
		each[len(each)-1].Round(time.Millisecond), slowest[len(slowest)/2].Round(time.Millisecond), slowest[len(slowest)-1].Round(time.Millisecond))
}
