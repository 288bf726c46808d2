package sledagent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent"
	"github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/ledger"
	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/sim"
)

const (
	nexus    = sledagentv1.ZoneKind_ZONE_KIND_NEXUS
	crucible = sledagentv1.ZoneKind_ZONE_KIND_CRUCIBLE
	ntp      = sledagentv1.ZoneKind_ZONE_KIND_INTERNAL_NTP
	dns      = sledagentv1.ZoneKind_ZONE_KIND_INTERNAL_DNS
)

var ctx = context.Background()

func ensure(a *sledagenttest.Agent, generation uint64, zones ...*sledagentv1.OmicronZoneConfig) error {
	_, err := a.Client.EnsureZones(ctx, &sledagentv1.EnsureZonesRequest{
		Config: &sledagentv1.OmicronZonesConfig{Generation: generation, Zones: zones},
	})
	return err
}

// ledgerBytes returns the content of every ledger copy, to prove that a
// refused request wrote nothing.
func ledgerBytes(t *testing.T, a *sledagenttest.Agent) [][]byte {
	t.Helper()
	var out [][]byte
	for _, dir := range a.Config.LedgerDirs {
		data, err := os.ReadFile(filepath.Join(dir, ledger.FileName))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

func requireUnchanged(t *testing.T, a *sledagenttest.Agent, before [][]byte) {
	t.Helper()
	after := ledgerBytes(t, a)
	for i := range before {
		if !bytes.Equal(before[i], after[i]) {
			t.Fatalf("ledger copy %d changed although the request was refused", i)
		}
	}
}

func requireReason(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	if status.Code(err) != code || apierror.Reason(err) != reason {
		t.Fatalf("error = %v (reason %q), want %s with reason %s", err, apierror.Reason(err), code, reason)
	}
}

func zoneResult(inv *sledagentv1.GetInventoryResponse, id string) *sledagentv1.ZoneReconciliation {
	for _, z := range inv.GetLastReconciliation().GetZones() {
		if z.GetZoneId() == id {
			return z
		}
	}
	return nil
}

func runtimeZones(t testing.TB, a *sledagenttest.Agent) map[uuid.UUID]sim.InspectedZone {
	t.Helper()
	return runtimeZonesIn(t, a.Config.ZoneStateDir)
}

func runtimeZonesIn(t testing.TB, dir string) map[uuid.UUID]sim.InspectedZone {
	t.Helper()
	zones, err := sim.Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	return zones
}

func isRunning(t testing.TB, a *sledagenttest.Agent, id string) bool {
	z, ok := runtimeZones(t, a)[uuid.MustParse(id)]
	return ok && z.Running
}

func TestZ1_FirstConfigIsAcceptedWhateverItsGeneration(t *testing.T) {
	a := sledagenttest.Start(t)
	a.Ensure(42, a.Zone(nexus, 1))
	if got := a.Inventory().GetLedgeredConfig().GetGeneration(); got != 42 {
		t.Fatalf("ledgered generation %d, want 42", got)
	}
}

func TestZ1_OlderGenerationIsRefusedAsOutdated(t *testing.T) {
	a := sledagenttest.Start(t)
	a.Ensure(5, a.Zone(nexus, 1))
	before := ledgerBytes(t, a)
	err := ensure(a, 4, a.Zone(nexus, 2))
	requireReason(t, err, codes.FailedPrecondition, "GENERATION_OUTDATED")
	requireUnchanged(t, a, before)
}

func TestZ1_SameGenerationWithOtherContentIsRefused(t *testing.T) {
	a := sledagenttest.Start(t)
	a.Ensure(5, a.Zone(nexus, 1))
	before := ledgerBytes(t, a)
	err := ensure(a, 5, a.Zone(nexus, 2))
	requireReason(t, err, codes.FailedPrecondition, "CONFIG_CHANGED_WITHOUT_GENERATION_BUMP")
	requireUnchanged(t, a, before)
}

func TestZ1_SameConfigAgainIsAcceptedAndRewritten(t *testing.T) {
	a := sledagenttest.Start(t)
	z1, z2 := a.Zone(nexus, 1), a.Zone(crucible, 2)
	a.Ensure(5, z1, z2)
	path := filepath.Join(a.Config.LedgerDirs[0], ledger.FileName)
	before := inode(t, path)
	// The same content in another order is the same config.
	a.Ensure(5, z2, z1)
	if inode(t, path) == before {
		t.Fatal("ledger copy was not rewritten for an idempotent EnsureZones")
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestZ2_EveryProblemIsReportedTogetherAndNothingIsWritten(t *testing.T) {
	a := sledagenttest.Start(t)
	a.Ensure(1, a.Zone(nexus, 1))
	before := ledgerBytes(t, a)
	dup := a.Zone(dns, 3)
	sameAddr := a.Zone(crucible, 4)
	sameAddr.Address = dup.Address
	dupID := a.Zone(crucible, 5)
	dupID.Id = dup.Id
	badAddr := a.Zone(crucible, 6)
	badAddr.Address = "fd00::1"
	err := ensure(a, 2,
		&sledagentv1.OmicronZoneConfig{Id: "not-a-uuid", Kind: crucible, FilesystemPool: a.Config.Zpools[0], Address: "[fd00::9]:1"},
		&sledagentv1.OmicronZoneConfig{Id: uuid.NewString(), Kind: 99, FilesystemPool: a.Config.Zpools[0], Address: "[fd00::a]:1"},
		&sledagentv1.OmicronZoneConfig{Id: uuid.NewString(), Kind: crucible, FilesystemPool: "oxp_" + uuid.NewString(), Address: "[fd00::b]:1"},
		dup, sameAddr, dupID, badAddr,
		a.Zone(ntp, 7), a.Zone(sledagentv1.ZoneKind_ZONE_KIND_BOUNDARY_NTP, 8),
	)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("error = %v, want INVALID_ARGUMENT", err)
	}
	var fields []string
	for _, v := range apierror.FieldViolations(err) {
		fields = append(fields, v.Field)
	}
	want := []string{
		"config.zones[0].id",
		"config.zones[1].kind",
		"config.zones[2].filesystem_pool",
		"config.zones[4].address",
		"config.zones[5].id",
		"config.zones[6].address",
		"config.zones[8].kind",
	}
	if !slices.Equal(fields, want) {
		t.Fatalf("field violations %v, want %v", fields, want)
	}
	requireUnchanged(t, a, before)
	if got := a.Inventory().GetLedgeredConfig().GetGeneration(); got != 1 {
		t.Fatalf("ledgered generation %d after a refused request, want 1", got)
	}
}

// A nexus zone says where its REST API and metrics listen and which
// database it uses; those are checked with the rest, and no other kind may
// carry them.
func TestZ2_NexusZoneDetailsAreRequiredCheckedAndOnlyForNexus(t *testing.T) {
	a := sledagenttest.Start(t)
	bare := a.Zone(nexus, 1)
	bare.Nexus = nil
	badDetails := a.Zone(nexus, 2)
	badDetails.Nexus = &sledagentv1.NexusZoneDetails{ExternalAddress: "nowhere", MetricsAddress: badDetails.Address,
		DatabaseBackend: "mysql"}
	misplaced := a.Zone(crucible, 3)
	misplaced.Nexus = a.Zone(nexus, 4).Nexus
	err := ensure(a, 1, bare, badDetails, misplaced)
	var fields []string
	for _, v := range apierror.FieldViolations(err) {
		fields = append(fields, v.Field)
	}
	want := []string{"config.zones[0].nexus", "config.zones[1].nexus.external_address", "config.zones[1].nexus.metrics_address",
		"config.zones[1].nexus.database_backend", "config.zones[1].nexus.database_url", "config.zones[2].nexus"}
	if status.Code(err) != codes.InvalidArgument || !slices.Equal(fields, want) {
		t.Fatalf("error %v with field violations %v, want %v", err, fields, want)
	}
	ok := a.Zone(nexus, 5)
	ok.Nexus.ExternalAddress = "0.0.0.0:12220" // every interface is allowed for the API
	a.Ensure(1, ok)
	if got := a.Inventory().GetLedgeredConfig().GetZones()[0].GetNexus(); got.GetDatabaseUrl() != ok.Nexus.DatabaseUrl ||
		got.GetExternalAddress() != "0.0.0.0:12220" {
		t.Fatalf("ledgered nexus details %v, want %v", got, ok.Nexus)
	}
}

func TestZ2_BadInputNamesTheFieldAndLeavesTheLedgerUntouched(t *testing.T) {
	a := sledagenttest.Start(t)
	a.Ensure(1, a.Zone(nexus, 1))
	zone := func(mut func(*sledagentv1.OmicronZoneConfig)) *sledagentv1.OmicronZonesConfig {
		z := a.Zone(crucible, 2)
		mut(z)
		return &sledagentv1.OmicronZonesConfig{Generation: 2, Zones: []*sledagentv1.OmicronZoneConfig{z}}
	}
	twice := a.Zone(crucible, 3)
	twiceAgain := a.Zone(dns, 4)
	twiceAgain.Id = twice.Id
	for name, tc := range map[string]struct {
		config *sledagentv1.OmicronZonesConfig
		field  string
	}{
		"empty request":    {nil, "config"},
		"generation 0":     {&sledagentv1.OmicronZonesConfig{Generation: 0}, "config.generation"},
		"malformed uuid":   {zone(func(z *sledagentv1.OmicronZoneConfig) { z.Id = "1234" }), "config.zones[0].id"},
		"uuid with braces": {zone(func(z *sledagentv1.OmicronZoneConfig) { z.Id = "{" + uuid.NewString() + "}" }), "config.zones[0].id"},
		"missing id":       {zone(func(z *sledagentv1.OmicronZoneConfig) { z.Id = "" }), "config.zones[0].id"},
		"unknown kind":     {zone(func(z *sledagentv1.OmicronZoneConfig) { z.Kind = 1234 }), "config.zones[0].kind"},
		"unspecified kind": {zone(func(z *sledagentv1.OmicronZoneConfig) { z.Kind = 0 }), "config.zones[0].kind"},
		"foreign pool":     {zone(func(z *sledagentv1.OmicronZoneConfig) { z.FilesystemPool = "oxp_" + uuid.NewString() }), "config.zones[0].filesystem_pool"},
		"missing pool":     {zone(func(z *sledagentv1.OmicronZoneConfig) { z.FilesystemPool = "" }), "config.zones[0].filesystem_pool"},
		"port zero":        {zone(func(z *sledagentv1.OmicronZoneConfig) { z.Address = "[fd00::1]:0" }), "config.zones[0].address"},
		"unparsable addr":  {zone(func(z *sledagentv1.OmicronZoneConfig) { z.Address = "nexus.local:80" }), "config.zones[0].address"},
		"duplicate ids": {&sledagentv1.OmicronZonesConfig{Generation: 2,
			Zones: []*sledagentv1.OmicronZoneConfig{twice, twiceAgain}}, "config.zones[1].id"},
	} {
		t.Run(name, func(t *testing.T) {
			before := ledgerBytes(t, a)
			_, err := a.Client.EnsureZones(ctx, &sledagentv1.EnsureZonesRequest{Config: tc.config})
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error = %v, want INVALID_ARGUMENT", err)
			}
			violations := apierror.FieldViolations(err)
			if len(violations) != 1 || violations[0].Field != tc.field {
				t.Fatalf("violations %+v, want exactly one naming %s", violations, tc.field)
			}
			requireUnchanged(t, a, before)
		})
	}
}

func TestZ3_LedgerSurvivesRestartAndACorruptCopyIsIgnored(t *testing.T) {
	a := sledagenttest.Start(t)
	a.Ensure(3, a.Zone(nexus, 1))
	for i, corrupt := range []func([]byte) []byte{
		func(b []byte) []byte { return b[:len(b)/2] }, // torn write
		func(b []byte) []byte { b[len(b)-3] ^= 0xff; return b },
	} {
		a.Stop()
		path := filepath.Join(a.Config.LedgerDirs[i], ledger.FileName)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, corrupt(data), 0o644); err != nil {
			t.Fatal(err)
		}
		a.Restart()
		if got := a.Inventory().GetLedgeredConfig().GetGeneration(); got != 3 {
			t.Fatalf("after corrupting copy %d: ledgered generation %d, want 3", i, got)
		}
		// The next commit repairs both copies.
		a.Ensure(3, a.Inventory().GetLedgeredConfig().GetZones()...)
	}
}

func TestZ3_HighestValidGenerationWins(t *testing.T) {
	a := sledagenttest.Start(t)
	zone := a.Zone(nexus, 1)
	a.Ensure(5, zone)
	copy0 := filepath.Join(a.Config.LedgerDirs[0], ledger.FileName)
	gen5, err := os.ReadFile(copy0)
	if err != nil {
		t.Fatal(err)
	}
	a.Ensure(6, zone, a.Zone(crucible, 2))
	a.Stop()
	// Copy 0 is back at generation 5, as if its disk missed the last commit.
	if err := os.WriteFile(copy0, gen5, 0o644); err != nil {
		t.Fatal(err)
	}
	a.Restart()
	if got := a.Inventory().GetLedgeredConfig(); got.GetGeneration() != 6 || len(got.GetZones()) != 2 {
		t.Fatalf("ledgered %v, want generation 6 with two zones", got)
	}
}

func TestZ3_AllCopiesCorruptRefusesToStart(t *testing.T) {
	a := sledagenttest.Start(t)
	a.Ensure(2, a.Zone(nexus, 1))
	a.Stop()
	for _, dir := range a.Config.LedgerDirs {
		if err := os.WriteFile(filepath.Join(dir, ledger.FileName), []byte("rackplane-ledger v1 garbage\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := sledagent.New(a.Config, zaptest.NewLogger(t))
	if err == nil || !strings.Contains(err.Error(), "refusing to start") {
		t.Fatalf("sledagent.New = %v, want a refusal to start", err)
	}
}

func TestZ4_ReconcilerRunsTheLedgeredZones(t *testing.T) {
	a := sledagenttest.Start(t)
	z1, z2, z3 := a.Zone(nexus, 1), a.Zone(crucible, 2), a.Zone(dns, 3)
	a.Ensure(1, z1, z2)
	a.WaitReconciled(1, sledagenttest.AllOK)
	if !isRunning(t, a, z1.Id) || !isRunning(t, a, z2.Id) {
		t.Fatal("zones of generation 1 are not running")
	}
	a.Ensure(2, z2, z3)
	inv := a.WaitReconciled(2, sledagenttest.AllOK)
	var ids []string
	for _, z := range inv.GetLastReconciliation().GetZones() {
		ids = append(ids, z.GetZoneId())
	}
	want := []string{z2.Id, z3.Id}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("reconciled zones %v, want %v", ids, want)
	}
	if rz := runtimeZones(t, a); len(rz) != 2 || !isRunning(t, a, z3.Id) {
		t.Fatalf("runtime holds %v, want exactly generation 2's zones", rz)
	}
}

func TestZ4_ChangedZoneConfigIsRestarted(t *testing.T) {
	a := sledagenttest.Start(t)
	z := a.Zone(crucible, 1)
	a.Ensure(1, z)
	a.WaitReconciled(1, sledagenttest.AllOK)
	started := runtimeZones(t, a)[uuid.MustParse(z.Id)].StartedAt
	z.FilesystemPool = a.Config.Zpools[1]
	a.Ensure(2, z)
	a.WaitReconciled(2, sledagenttest.AllOK)
	if now := runtimeZones(t, a)[uuid.MustParse(z.Id)]; !now.Running || !now.StartedAt.After(started) {
		t.Fatalf("zone with a changed config was not restarted: %+v", now)
	}
}

func TestZ4_NoZoneStartsInAPassWhereAShutdownFailed(t *testing.T) {
	a := sledagenttest.Start(t)
	old, replacement := a.Zone(nexus, 1), a.Zone(nexus, 2)
	a.Ensure(1, old)
	a.WaitReconciled(1, sledagenttest.AllOK)
	failShutdown(t, a, old.Id, sledagentv1.ShutdownStep_SHUTDOWN_STEP_HALT_AND_REMOVE, 1000)
	a.Ensure(2, replacement)
	// Several passes fail to shut the old zone down; none starts the new one.
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if e := zoneResult(inv, old.Id).GetError(); e.GetAttempts() < 3 {
			return fmt.Errorf("old zone error %v, waiting for 3 failed attempts", e)
		}
		return nil
	})
	if isRunning(t, a, replacement.Id) || zoneResult(a.Inventory(), replacement.Id) != nil {
		t.Fatal("a zone was started in a pass where a shutdown failed")
	}
	clearFaults(t, a)
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if zoneResult(inv, old.Id) != nil || zoneResult(inv, replacement.Id).GetOk() == nil {
			return errors.New("waiting for the old zone to go and the new one to run")
		}
		return nil
	})
	if isRunning(t, a, old.Id) || !isRunning(t, a, replacement.Id) {
		t.Fatal("runtime disagrees with the inventory")
	}
}

func TestZ5_PartialShutdownResumesFromTheFailedStep(t *testing.T) {
	a := sledagenttest.Start(t)
	z := a.Zone(crucible, 1)
	a.Ensure(1, z)
	a.WaitReconciled(1, sledagenttest.AllOK)
	failShutdown(t, a, z.Id, sledagentv1.ShutdownStep_SHUTDOWN_STEP_CLEAN_UP, 1000)
	a.Ensure(2)
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		e := zoneResult(inv, z.Id).GetError()
		if e.GetState() != sledagentv1.ZoneState_ZONE_STATE_PARTIALLY_SHUT_DOWN ||
			e.GetShutdownStep() != sledagentv1.ShutdownStep_SHUTDOWN_STEP_CLEAN_UP || e.GetAttempts() < 2 {
			return fmt.Errorf("zone error %v, waiting for repeated clean-up failures", e)
		}
		if !strings.Contains(e.GetMessage(), "clean up") {
			return fmt.Errorf("message %q does not name the step", e.GetMessage())
		}
		return nil
	})
	// Halting again would now fail for good; resuming at clean-up does not
	// halt again, so the zone goes once clean-up is allowed to succeed.
	failShutdown(t, a, z.Id, sledagentv1.ShutdownStep_SHUTDOWN_STEP_HALT_AND_REMOVE, 1000)
	failShutdown(t, a, z.Id, sledagentv1.ShutdownStep_SHUTDOWN_STEP_CLEAN_UP, 1)
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if r := zoneResult(inv, z.Id); r != nil {
			return fmt.Errorf("zone still reported: %v", r)
		}
		return nil
	})
	if _, present := runtimeZones(t, a)[uuid.MustParse(z.Id)]; present {
		t.Fatal("inventory dropped a zone the runtime still holds")
	}
}

func TestZ5_FailedToStartIsReportedAndRetried(t *testing.T) {
	a := sledagenttest.Start(t)
	z := a.Zone(nexus, 1)
	failStart(t, a, z.Id, 1000, "no image for the zone")
	a.Ensure(1, z)
	a.WaitReconciled(1, func(inv *sledagentv1.GetInventoryResponse) error {
		e := zoneResult(inv, z.Id).GetError()
		if e.GetState() != sledagentv1.ZoneState_ZONE_STATE_FAILED_TO_START || e.GetAttempts() < 3 ||
			!strings.Contains(e.GetMessage(), "no image for the zone") {
			return fmt.Errorf("zone error %v, waiting for 3 failed starts", e)
		}
		return nil
	})
	clearFaults(t, a)
	a.WaitReconciled(1, sledagenttest.AllOK)
	if !isRunning(t, a, z.Id) {
		t.Fatal("zone reported OK but not running")
	}
}

func TestZ5_WantedAgainPartiallyShutDownZoneFinishesShuttingDownFirst(t *testing.T) {
	a := sledagenttest.Start(t)
	z := a.Zone(nexus, 1)
	a.Ensure(1, z)
	a.WaitReconciled(1, sledagenttest.AllOK)
	firstStart := runtimeZones(t, a)[uuid.MustParse(z.Id)].StartedAt
	failShutdown(t, a, z.Id, sledagentv1.ShutdownStep_SHUTDOWN_STEP_CLEAN_UP, 1000)
	a.Ensure(2)
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if zoneResult(inv, z.Id).GetError() == nil {
			return errors.New("waiting for the partial shutdown")
		}
		return nil
	})
	a.Ensure(3, z)
	inv := a.WaitReconciled(3, func(inv *sledagentv1.GetInventoryResponse) error {
		if e := zoneResult(inv, z.Id).GetError(); e.GetState() != sledagentv1.ZoneState_ZONE_STATE_PARTIALLY_SHUT_DOWN {
			return fmt.Errorf("zone error %v, want partially shut down", e)
		}
		return nil
	})
	if isRunning(t, a, z.Id) {
		t.Fatalf("zone started again before its shutdown finished: %v", inv)
	}
	clearFaults(t, a)
	a.WaitReconciled(3, sledagenttest.AllOK)
	now := runtimeZones(t, a)[uuid.MustParse(z.Id)]
	if !now.Running || !now.StartedAt.After(firstStart) {
		t.Fatalf("zone not freshly started after finishing its shutdown: %+v", now)
	}
}

func TestZ6_InventoryReportsTheSledConfigAndReconciler(t *testing.T) {
	a := sledagenttest.Start(t)
	inv := a.Inventory()
	if inv.GetSledId() != a.Config.SledID || inv.GetResources().GetNcpus() != a.Config.NCPUs ||
		inv.GetResources().GetMemoryBytes() != a.Config.MemoryGiB<<30 ||
		!slices.Equal(inv.GetResources().GetZpools(), a.Config.Zpools) {
		t.Fatalf("sled facts %v do not match the config", inv)
	}
	if inv.GetReconcilerStatus().GetNotYetRun() == nil || inv.GetLedgeredConfig() != nil || inv.GetLastReconciliation() != nil {
		t.Fatalf("a new sled reports %v, want NOT_YET_RUN and nothing ledgered", inv)
	}
	z := a.Zone(nexus, 1)
	a.Ensure(7, z)
	inv = a.WaitReconciled(7, sledagenttest.AllOK)
	idle := inv.GetReconcilerStatus().GetIdle()
	if idle == nil || idle.GetCompletedAt() == nil || idle.GetDuration() == nil {
		t.Fatalf("reconciler status %v, want IDLE with completion time and duration", inv.GetReconcilerStatus())
	}
	if inv.GetLedgeredConfig().GetGeneration() != 7 || zoneResult(inv, z.Id).GetKind() != nexus {
		t.Fatalf("inventory %v does not show generation 7's zone", inv)
	}
}

// TestZ6_ZoneWhoseShutdownFailsStaysInInventoryUntilItIsGone checks the
// invariant nexus relies on to call a zone confirmed gone: whenever the
// inventory's last reconciled generation is past the zone's removal and the
// zone is absent, the runtime does not hold it.
func TestZ6_ZoneWhoseShutdownFailsStaysInInventoryUntilItIsGone(t *testing.T) {
	const failures = 5
	// Retries slow enough that the ERROR window (at least 10+20+40+50 ms)
	// is seen by polling even on a loaded machine.
	a := sledagenttest.Start(t, func(c *config.Config) {
		c.ReconcilerRetryInitial = config.Duration(20 * time.Millisecond)
		c.ReconcilerRetryMax = config.Duration(100 * time.Millisecond)
	})
	victim, keeper := a.Zone(nexus, 1), a.Zone(crucible, 2)
	a.Ensure(1, victim, keeper)
	a.WaitReconciled(1, sledagenttest.AllOK)
	failShutdown(t, a, victim.Id, sledagentv1.ShutdownStep_SHUTDOWN_STEP_HALT_AND_REMOVE, failures)
	a.Ensure(2, keeper)

	maxAttempts := uint32(0)
	testutil.WaitFor(t, 10*time.Second, func() error {
		inv := a.Inventory() // read before the runtime: absent here ⇒ gone there
		_, inRuntime := runtimeZones(t, a)[uuid.MustParse(victim.Id)]
		last := inv.GetLastReconciliation()
		r := zoneResult(inv, victim.Id)
		if last.GetGeneration() >= 2 {
			if r == nil && inRuntime {
				t.Fatal("inventory omits a zone the runtime still holds")
			}
			if r != nil && r.GetError() == nil {
				t.Fatalf("zone being removed reported OK: %v", r)
			}
		}
		if r != nil {
			maxAttempts = max(maxAttempts, r.GetError().GetAttempts())
			return fmt.Errorf("zone still reported after %d attempts", r.GetError().GetAttempts())
		}
		if last.GetGeneration() < 2 {
			return errors.New("generation 2 not yet reconciled")
		}
		return nil
	})
	if maxAttempts == 0 || maxAttempts > failures {
		t.Fatalf("saw at most %d failed attempts reported, want 1..%d", maxAttempts, failures)
	}
}

func TestZ6_InventoryAnswersWhileAPassIsUnderWay(t *testing.T) {
	a := sledagenttest.Start(t)
	z := a.Zone(nexus, 1)
	a.Ensure(1, z)
	a.WaitReconciled(1, sledagenttest.AllOK)
	if _, err := a.Sim.HangZoneShutdown(ctx, &sledagentv1.HangZoneShutdownRequest{ZoneId: z.Id}); err != nil {
		t.Fatal(err)
	}
	a.Ensure(2)
	testutil.WaitFor(t, 5*time.Second, func() error {
		inv := a.Inventory()
		running := inv.GetReconcilerStatus().GetRunning()
		if running.GetGeneration() != 2 {
			return fmt.Errorf("reconciler status %v, want RUNNING generation 2", inv.GetReconcilerStatus())
		}
		if zoneResult(inv, z.Id).GetOk() == nil {
			t.Fatal("a zone whose halt is hanging vanished from the last result")
		}
		return nil
	})
	if _, err := a.Sim.ReleaseZoneShutdown(ctx, &sledagentv1.ReleaseZoneShutdownRequest{ZoneId: z.Id}); err != nil {
		t.Fatal(err)
	}
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if len(inv.GetLastReconciliation().GetZones()) != 0 {
			return errors.New("zone still reported")
		}
		return nil
	})
}

func TestZ7_ShuttingDownAZoneThatIsAlreadyGoneSucceeds(t *testing.T) {
	a := sledagenttest.Start(t)
	z := a.Zone(nexus, 1)
	a.Ensure(1, z)
	a.WaitReconciled(1, sledagenttest.AllOK)
	// The zone vanishes underneath the agent (an operator removed it).
	a.Stop()
	vanish(t, a.Config.ZoneStateDir, z.Id)
	a.Restart() // the runtime re-reads its zones; the ledger still wants z
	a.Ensure(2)
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if len(inv.GetLastReconciliation().GetZones()) != 0 {
			return fmt.Errorf("zones still reported: %v", inv.GetLastReconciliation().GetZones())
		}
		return nil
	})

	rt, err := sim.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	for _, step := range reconciler.ShutdownSteps {
		if err := rt.Shutdown(ctx, uuid.New(), step); err != nil {
			t.Fatalf("%s of an unknown zone: %v", step, err)
		}
	}
}

func TestZ8_RestartAdoptsMatchingZonesRemovesUnwantedAndStartsMissing(t *testing.T) {
	a := sledagenttest.Start(t)
	kept, lost := a.Zone(nexus, 1), a.Zone(crucible, 2)
	a.Ensure(1, kept, lost)
	a.WaitReconciled(1, sledagenttest.AllOK)
	keptBefore := runtimeZones(t, a)[uuid.MustParse(kept.Id)]
	a.Stop()

	// While the agent is down: one wanted zone disappears, and a zone the
	// config does not mention appears.
	rt, err := sim.Open(a.Config.ZoneStateDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Vanish(uuid.MustParse(lost.Id)); err != nil {
		t.Fatal(err)
	}
	stray := zoneconfig.Zone{ID: uuid.New(), Kind: "oximeter", FilesystemPool: a.Config.Zpools[0]}
	if err := rt.StartZone(ctx, stray); err != nil {
		t.Fatal(err)
	}
	rt.Close()

	a.Restart()
	a.WaitReconciled(1, func(inv *sledagentv1.GetInventoryResponse) error {
		if len(inv.GetLastReconciliation().GetZones()) != 2 || sledagenttest.AllOK(inv) != nil {
			return fmt.Errorf("zones %v, want the two ledgered zones OK", inv.GetLastReconciliation().GetZones())
		}
		return nil
	})
	zones := runtimeZones(t, a)
	if len(zones) != 2 || !zones[uuid.MustParse(lost.Id)].Running {
		t.Fatalf("runtime holds %v, want the two ledgered zones running", zones)
	}
	if got := zones[uuid.MustParse(kept.Id)]; !got.StartedAt.Equal(keptBefore.StartedAt) {
		t.Fatalf("a matching zone was restarted instead of adopted (started %s, then %s)", keptBefore.StartedAt, got.StartedAt)
	}
}

func TestZ8_RestartResumesAPartialShutdown(t *testing.T) {
	a := sledagenttest.Start(t)
	z := a.Zone(nexus, 1)
	a.Ensure(1, z)
	a.WaitReconciled(1, sledagenttest.AllOK)
	failShutdown(t, a, z.Id, sledagentv1.ShutdownStep_SHUTDOWN_STEP_CLEAN_UP, 1000)
	a.Ensure(2)
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if zoneResult(inv, z.Id).GetError() == nil {
			return errors.New("waiting for the partial shutdown")
		}
		return nil
	})
	a.Restart() // faults live in the process and are gone with it
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if len(inv.GetLastReconciliation().GetZones()) != 0 {
			return errors.New("zone still reported")
		}
		return nil
	})
	if len(runtimeZones(t, a)) != 0 {
		t.Fatal("runtime still holds the zone")
	}
}

func TestV7_ZoneFaultRequestsAreValidated(t *testing.T) {
	a := sledagenttest.Start(t)
	_, err := a.Sim.FailZoneStart(ctx, &sledagentv1.FailZoneStartRequest{ZoneId: "zone-1", Count: 0})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("error = %v, want INVALID_ARGUMENT", err)
	}
	var fields []string
	for _, v := range apierror.FieldViolations(err) {
		fields = append(fields, v.Field)
	}
	if !slices.Equal(fields, []string{"zone_id", "count"}) {
		t.Fatalf("violations name %v, want zone_id and count", fields)
	}
	_, err = a.Sim.FailZoneShutdown(ctx, &sledagentv1.FailZoneShutdownRequest{Count: 1, Step: 77})
	if v := apierror.FieldViolations(err); len(v) != 1 || v[0].Field != "step" {
		t.Fatalf("unknown step: %v", err)
	}
}

func TestV7_ZoneLatencyDelaysOperations(t *testing.T) {
	a := sledagenttest.Start(t)
	if _, err := a.Sim.SetZoneLatency(ctx, &sledagentv1.SetZoneLatencyRequest{
		Start: durationpb.New(30 * time.Millisecond),
	}); err != nil {
		t.Fatal(err)
	}
	a.Ensure(1, a.Zone(nexus, 1))
	inv := a.WaitReconciled(1, sledagenttest.AllOK)
	if d := inv.GetReconcilerStatus().GetIdle().GetDuration().AsDuration(); d < 30*time.Millisecond {
		t.Fatalf("pass took %s with 30ms start latency", d)
	}
}

func vanish(t *testing.T, dir, id string) {
	t.Helper()
	rt, err := sim.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if err := rt.Vanish(uuid.MustParse(id)); err != nil {
		t.Fatal(err)
	}
}

func failShutdown(t *testing.T, a *sledagenttest.Agent, id string, step sledagentv1.ShutdownStep, count uint32) {
	t.Helper()
	if _, err := a.Sim.FailZoneShutdown(ctx, &sledagentv1.FailZoneShutdownRequest{ZoneId: id, Step: step, Count: count}); err != nil {
		t.Fatal(err)
	}
}

func failStart(t *testing.T, a *sledagenttest.Agent, id string, count uint32, message string) {
	t.Helper()
	if _, err := a.Sim.FailZoneStart(ctx, &sledagentv1.FailZoneStartRequest{ZoneId: id, Count: count, Message: message}); err != nil {
		t.Fatal(err)
	}
}

func clearFaults(t *testing.T, a *sledagenttest.Agent) {
	t.Helper()
	if _, err := a.Sim.ClearZoneFaults(ctx, &sledagentv1.ClearZoneFaultsRequest{}); err != nil {
		t.Fatal(err)
	}
}

// A zone whose clean-up after a failed start keeps failing is retried with
// the passes' backoff, not in a loop: the restart backoff it was waiting
// out is no reason to come back at once.
func TestZ5_AFailingCleanUpAfterAFailedStartIsRetriedWithBackoff(t *testing.T) {
	const initial = 200 * time.Millisecond
	a := sledagenttest.Start(t, func(c *config.Config) {
		c.ReconcilerRetryInitial, c.ReconcilerRetryMax = config.Duration(initial), config.Duration(10*time.Second)
	})
	zone := a.Zone(sledagentv1.ZoneKind_ZONE_KIND_OXIMETER, 1)
	failStart(t, a, zone.Id, 1, "injected")
	failShutdown(t, a, zone.Id, sledagentv1.ShutdownStep_SHUTDOWN_STEP_HALT_AND_REMOVE, 1_000_000)
	began := time.Now()
	a.Ensure(1, zone)
	const attempts = 4
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, z := range a.Inventory().GetLastReconciliation().GetZones() {
			if z.GetZoneId() == zone.Id && z.GetError().GetState() == sledagentv1.ZoneState_ZONE_STATE_PARTIALLY_SHUT_DOWN &&
				z.GetError().GetAttempts() >= attempts {
				return nil
			}
		}
		return fmt.Errorf("fewer than %d failed clean-ups so far", attempts)
	})
	// The start's backoff, then at least the passes' delays between the
	// failed clean-ups: initial·(1+2)·(1-jitter) after the first.
	if least, took := initial*3/2, time.Since(began); took < least {
		t.Fatalf("%d failed clean-ups within %s, before the passes' backoff allows (%s)", attempts, took, least)
	}
}
