package datastore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// S3: a sled reports only the VMMs placed on it, and a VMM only the
// migration sides it is; anything else is model.ErrNotPlacedHere and
// changes nothing, however new its generation.
func TestS3_ASledReportsOnlyItsOwnVMMsAndTheirMigrationSides(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		p, s := fixture(t, ds)
		inst := newInstance(p.ID, "i")
		if err := ds.InstanceCreate(ctx, inst); err != nil {
			t.Fatal(err)
		}
		source := model.VMM{ID: uuid.New(), InstanceID: inst.ID, SledID: s.ID, TimeCreated: now,
			Runtime: model.VMMRuntime{State: model.VMMRunning, Generation: 3, TimeUpdated: now}}
		target := model.VMM{ID: uuid.New(), InstanceID: inst.ID, SledID: s.ID, TimeCreated: now,
			Runtime: model.VMMRuntime{State: model.VMMStarting, Generation: 2, TimeUpdated: now}}
		for _, v := range []model.VMM{source, target} {
			if err := ds.VMMInsert(ctx, v); err != nil {
				t.Fatal(err)
			}
		}
		forged := model.VMMRuntime{State: model.VMMDestroyed, Generation: 1_000_000, TimeUpdated: now.Add(time.Second)}
		if wrote, err := ds.VMMReportRuntime(ctx, uuid.New(), source.ID, forged); wrote || !errors.Is(err, model.ErrNotPlacedHere) {
			t.Fatalf("another sled's report: (%v, %v); want ErrNotPlacedHere", wrote, err)
		}
		if _, err := ds.VMMReportRuntime(ctx, s.ID, uuid.New(), forged); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("a report of an unknown VMM: %v; want ErrNotFound", err)
		}
		if got, err := ds.VMMGet(ctx, source.ID); err != nil || got.Runtime.State != model.VMMRunning || got.Runtime.Generation != 3 {
			t.Fatalf("a refused report changed the VMM: %+v (%v)", got.Runtime, err)
		}
		stopping := model.VMMRuntime{State: model.VMMStopping, Generation: 4, TimeUpdated: now.Add(time.Second)}
		if wrote, err := ds.VMMReportRuntime(ctx, s.ID, source.ID, stopping); !wrote || err != nil {
			t.Fatalf("its own sled's report: (%v, %v); want written", wrote, err)
		}

		m := model.Migration{ID: uuid.New(), InstanceID: inst.ID, SourceVMM: source.ID, TargetVMM: target.ID, TimeCreated: now}
		if err := ds.MigrationInsert(ctx, m); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			vmm  uuid.UUID
			side model.MigrationSide
		}{{target.ID, model.MigrationSource}, {source.ID, model.MigrationTarget}, {uuid.New(), model.MigrationSource}} {
			if wrote, err := ds.MigrationUpdateSide(ctx, c.vmm, m.ID, c.side, model.MigrationFailed, 99, now); wrote || !errors.Is(err, model.ErrNotPlacedHere) {
				t.Fatalf("VMM %s reporting the %s side: (%v, %v); want ErrNotPlacedHere", c.vmm, c.side, wrote, err)
			}
		}
		if wrote, err := ds.MigrationUpdateSide(ctx, source.ID, m.ID, model.MigrationSource, model.MigrationInProgress, 2, now); !wrote || err != nil {
			t.Fatalf("the source reporting its side: (%v, %v); want written", wrote, err)
		}
	})
}
