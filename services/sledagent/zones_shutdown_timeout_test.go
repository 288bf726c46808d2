package sledagent_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// A zone whose halt hangs must not hold the reconciler forever: past
// zone_shutdown_timeout the shutdown is a failed one (Z5), reported in the
// inventory, retried, and the zone is not forgotten; meanwhile nothing
// starts (Z4), and once the halt can finish the zone goes.
func TestZ5_AHungZoneShutdownTimesOutAsAFailedShutdownAndIsRetried(t *testing.T) {
	const bound = 200 * time.Millisecond
	a := sledagenttest.Start(t, func(c *config.Config) {
		c.ZoneShutdownTimeout = config.Duration(bound)
		c.ZoneStopTimeout = config.Duration(bound / 2)
	})
	hung, replacement := a.Zone(crucible, 1), a.Zone(dns, 2)
	a.Ensure(1, hung)
	a.WaitReconciled(1, sledagenttest.AllOK)
	if _, err := a.Sim.HangZoneShutdown(ctx, &sledagentv1.HangZoneShutdownRequest{ZoneId: hung.Id}); err != nil {
		t.Fatal(err)
	}
	a.Ensure(2, replacement)

	// Several passes complete, each reporting the timed-out halt: the
	// reconciler is neither stuck nor forgetting the zone.
	testutil.WaitFor(t, 10*time.Second, func() error {
		inv := a.Inventory()
		last := inv.GetLastReconciliation()
		if last.GetGeneration() < 2 {
			return fmt.Errorf("last reconciled generation %d, waiting for 2 (status %v)",
				last.GetGeneration(), inv.GetReconcilerStatus())
		}
		r := zoneResult(inv, hung.Id)
		if r == nil {
			t.Fatal("a zone whose halt is hung was forgotten")
		}
		if zoneResult(inv, replacement.Id) != nil || isRunning(t, a, replacement.Id) {
			t.Fatal("a zone was started in a pass where a shutdown timed out")
		}
		e := r.GetError()
		if e.GetState() != sledagentv1.ZoneState_ZONE_STATE_PARTIALLY_SHUT_DOWN ||
			e.GetShutdownStep() != sledagentv1.ShutdownStep_SHUTDOWN_STEP_HALT_AND_REMOVE {
			t.Fatalf("zone with a hung halt reported %v, want PARTIALLY_SHUT_DOWN at HALT_AND_REMOVE", r)
		}
		if !strings.Contains(e.GetMessage(), "timed out") {
			t.Fatalf("error %q does not say the shutdown timed out", e.GetMessage())
		}
		if e.GetAttempts() < 3 {
			return fmt.Errorf("%d timed-out attempts so far, waiting for 3", e.GetAttempts())
		}
		return nil
	})
	if !isRunning(t, a, hung.Id) {
		t.Fatal("the runtime no longer runs a zone whose halt never finished")
	}

	if _, err := a.Sim.ReleaseZoneShutdown(ctx, &sledagentv1.ReleaseZoneShutdownRequest{ZoneId: hung.Id}); err != nil {
		t.Fatal(err)
	}
	a.WaitReconciled(2, func(inv *sledagentv1.GetInventoryResponse) error {
		if zoneResult(inv, hung.Id) != nil || zoneResult(inv, replacement.Id).GetOk() == nil {
			return errors.New("waiting for the hung zone to go and its replacement to run")
		}
		return nil
	})
	if isRunning(t, a, hung.Id) || !isRunning(t, a, replacement.Id) {
		t.Fatal("runtime disagrees with the inventory")
	}
}
