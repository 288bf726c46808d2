package sledagent_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/pkg/ledgerfile"
	"github.com/rackplane/rackplane/services/sledagent/ledger"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// TestZ3_TheAgentStartsOnTheGoodCopyWhenTheOtherHasAValidChecksumButInvalidContent:
// a newer copy that passes its checksum but is no config the agent would
// accept neither stops the agent nor becomes its config; the next commit
// rewrites it.
func TestZ3_TheAgentStartsOnTheGoodCopyWhenTheOtherHasAValidChecksumButInvalidContent(t *testing.T) {
	for name, corrupt := range map[string]func(good string) string{
		"not JSON":          func(string) string { return "zones: generation 4" },
		"unknown zone kind": func(good string) string { return strings.Replace(good, `"kind":"nexus"`, `"kind":"propolis"`, 1) },
		"duplicate ids": func(good string) string {
			// The ledger sorts zones by id: the second takes the first's.
			ids := strings.Split(good, `"id":"`)
			first, second := ids[1][:36], ids[2][:36]
			return strings.Replace(good, second, first, 1)
		},
	} {
		for badCopy := range 2 {
			t.Run(fmt.Sprintf("%s in copy %d", name, badCopy), func(t *testing.T) {
				a := sledagenttest.Start(t)
				a.Ensure(3, a.Zone(nexus, 1), a.Zone(crucible, 2))
				a.Stop()
				good := ledgerPayload(t, a.Config.LedgerDirs[1-badCopy])
				bad := corrupt(strings.Replace(good, `"generation":3`, `"generation":4`, 1))
				f, err := ledgerfile.New(a.Config.LedgerDirs[badCopy:badCopy+1], ledger.FileName)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.Commit(4, []byte(bad)); err != nil {
					t.Fatal(err)
				}

				a.Restart()
				inv := a.Inventory()
				if got := inv.GetLedgeredConfig(); got.GetGeneration() != 3 || len(got.GetZones()) != 2 {
					t.Fatalf("ledgered %v, want the good copy's generation 3 with two zones", got)
				}
				a.Ensure(5, inv.GetLedgeredConfig().GetZones()...)
				if got := ledgerPayload(t, a.Config.LedgerDirs[badCopy]); !strings.Contains(got, `"generation":5`) {
					t.Fatalf("after a commit the corrupt copy holds %s, want generation 5", got)
				}
			})
		}
	}
}

// ledgerPayload returns the payload of the zones ledger copy in dir, checked
// by its checksum.
func ledgerPayload(t *testing.T, dir string) string {
	t.Helper()
	f, err := ledgerfile.New([]string{dir}, ledger.FileName)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Load()
	if err != nil || !got.Found {
		t.Fatalf("loading %s: %+v, %v", dir, got, err)
	}
	return string(got.Payload)
}
