package sim

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

func startZones(t *testing.T, r *Runtime, n int) []uuid.UUID {
	t.Helper()
	var ids []uuid.UUID
	for i := 0; i < n; i++ {
		z := zoneconfig.Zone{ID: uuid.New(), Kind: "crucible", FilesystemPool: "oxp_x"}
		if err := r.StartZone(context.Background(), z); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, z.ID)
	}
	return ids
}

func TestZ8_ZonesOutliveTheRuntimeAndATornLastLineIsIgnored(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := startZones(t, r, 3)
	if err := r.Shutdown(context.Background(), ids[0], reconciler.StepUntrackMetrics); err != nil {
		t.Fatal(err)
	}
	if err := r.Shutdown(context.Background(), ids[0], reconciler.StepHaltAndRemove); err != nil {
		t.Fatal(err)
	}
	r.Close()
	// A kill -9 in the middle of an append leaves half a line.
	f, err := os.OpenFile(filepath.Join(dir, journalName), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"id":"` + ids[1].String() + `","removed":tr`)
	f.Close()

	r, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	zones, _ := r.Zones(context.Background())
	if len(zones) != 3 {
		t.Fatalf("reopened runtime holds %d zones, want 3", len(zones))
	}
	for _, z := range zones {
		want := reconciler.StepUntrackMetrics
		if z.Zone.ID == ids[0] {
			want = reconciler.StepCleanUp
		}
		if z.ResumeAt != want {
			t.Errorf("zone %s resumes at %s, want %s", z.Zone.ID, z.ResumeAt, want)
		}
	}
}

func TestCompactionKeepsExactlyTheLiveZones(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	keep := startZones(t, r, 5)
	for round := 0; round < 3; round++ {
		for _, id := range startZones(t, r, 500) {
			for _, step := range reconciler.ShutdownSteps {
				if err := r.Shutdown(context.Background(), id, step); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if r.journal.lines > 4*len(keep)+1024+4 {
		t.Fatalf("journal has %d lines for %d zones: never compacted", r.journal.lines, len(keep))
	}
	zones, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(zones) != len(keep) {
		t.Fatalf("journal holds %d zones, want %d", len(zones), len(keep))
	}
	for _, id := range keep {
		if !zones[id].Running {
			t.Fatalf("zone %s lost by compaction", id)
		}
	}
}

func TestCorruptionBeforeTheLastLineIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, journalName), []byte("garbage\n{\"id\":\"x\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil {
		t.Fatal("a journal corrupt in the middle was accepted")
	}
}
