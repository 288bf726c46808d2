package sledagent_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/ledgerfile"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/ledger"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// Z3, Z6: a ledger copy whose checksum is right but which names a pool of
// another sled is corrupt: the agent starts on the good copy, the
// inventory names the bad one's problem, and the next commit rewrites it.
func TestZ3_ACopyNamingAPoolOfAnotherSledIsCorruptAndTheInventorySaysSo(t *testing.T) {
	a := sledagenttest.Start(t)
	a.Ensure(3, a.Zone(nexus, 1), a.Zone(crucible, 2))
	a.Stop()
	good := ledgerPayload(t, a.Config.LedgerDirs[0])
	bad := strings.ReplaceAll(strings.Replace(good, `"generation":3`, `"generation":4`, 1), a.Config.Zpools[0], "oxp_"+uuid.NewString())
	f, _ := ledgerfile.New(a.Config.LedgerDirs[1:], ledger.FileName)
	if _, err := f.Commit(4, []byte(bad)); err != nil {
		t.Fatal(err)
	}
	a.Restart()
	inv := a.Inventory()
	if inv.GetLedgeredConfig().GetGeneration() != 3 {
		t.Fatalf("the agent started on generation %d, want the good copy's 3", inv.GetLedgeredConfig().GetGeneration())
	}
	if c := inv.GetLedgerCopies(); len(c) != 2 || c[0].GetProblem() != "" || !strings.Contains(c[1].GetProblem(), "is not a zpool of this sled") {
		t.Fatalf("inventory's ledger copies %v, want copy 1's foreign pool named", c)
	}
	a.Ensure(5, inv.GetLedgeredConfig().GetZones()...)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if c := a.Inventory().GetLedgerCopies(); c[1].GetProblem() != "" || c[1].GetGeneration() != 5 {
			return fmt.Errorf("ledger copies %v, want copy 1 rewritten at generation 5", c)
		}
		return nil
	})
}
