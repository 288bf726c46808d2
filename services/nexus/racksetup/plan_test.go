package racksetup_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/services/nexus/racksetup"
)

// Z11: a plan is checked whole before anything is recorded, every problem
// named by its place, so that a typo never reaches the database, where a
// rack is set up once and for all.
func TestZ11_APlanIsCheckedWholeBeforeAnythingIsRecorded(t *testing.T) {
	for _, tc := range []struct {
		name, plan string
		want       []string
	}{
		{"ids", `
database: {backend: postgres, url: "postgres://db"}
sleds:
  - id: not-a-uuid
    address: "sled-1:12345"
    zones:
      - {kind: nexus, pool: oxp_0b0e0000-0000-4000-8000-0000000c0101, address: "10.0.0.1:12221",
         nexus: {external_address: "0.0.0.0:12220", metrics_address: "0.0.0.0:12223"}}
      - {id: 00000000-0000-0000-0000-000000000000, kind: oximeter, pool: oxp_0b0e0000-0000-4000-8000-0000000c0101, address: "10.0.0.1:12222"}
`, []string{`sleds[0].id: "not-a-uuid" is not a UUID`, "sleds[0].zones[0].id: is required", "sleds[0].zones[1].id: must not be the nil UUID"}},
		{"duplicates", `
database: {backend: postgres, url: "postgres://db"}
sleds:
  - id: 1a5ec001-0000-4000-8000-000000000001
    address: "sled-1:12345"
    zones:
      - {id: 4e000000-0000-4000-8000-0000000c0001, kind: nexus, pool: oxp_0b0e0000-0000-4000-8000-0000000c0101,
         address: "10.0.0.1:12221", nexus: {external_address: "10.0.0.1:12221", metrics_address: "0.0.0.0:12223"}}
  - id: 1a5ec001-0000-4000-8000-000000000001
    address: "sled-1:12345"
    zones:
      - {id: 4e000000-0000-4000-8000-0000000c0001, kind: crucible, pool: oxp_0b0e0000-0000-4000-8000-0000000c0201, address: "10.0.0.2:1"}
`, []string{"sleds[1].id: 1a5ec001-0000-4000-8000-000000000001 is also sleds[0]'s", "sleds[1].address: sled-1:12345 is also sleds[0]'s",
			"sleds[1].zones[0].id: 4e000000-0000-4000-8000-0000000c0001 is also sleds[0].zones[0]'s",
			"sleds[0].zones[0].nexus.external_address: 10.0.0.1:12221 is also sleds[0].zones[0].address"}},
		{"addresses that collide when bound", `
database: {backend: postgres, url: "postgres://db"}
sleds:
  - id: 1a5ec001-0000-4000-8000-000000000001
    address: "sled-1:12345"
    zones:
      - {id: 4e000000-0000-4000-8000-0000000c0001, kind: nexus, pool: oxp_0b0e0000-0000-4000-8000-0000000c0101,
         address: "127.0.0.1:12221", nexus: {external_address: "0.0.0.0:12221", metrics_address: "[::ffff:127.0.0.1]:12221"}}
  - id: 1a5ec002-0000-4000-8000-000000000001
    address: "sled-2:12345"
    zones:
      - {id: 2e000000-0000-4000-8000-000000000002, kind: Crucible, pool: oxp_0b0e0000-0000-4000-8000-0000000c0201, address: "127.0.0.1:12221"}
`, []string{"sleds[0].zones[0].nexus.external_address: 0.0.0.0:12221 takes port 12221 on every address of the sled",
			"sleds[0].zones[0].nexus.metrics_address: 127.0.0.1:12221 is also sleds[0].zones[0].address",
			"sleds[1].zones[0].address: 127.0.0.1:12221 is also sleds[0].zones[0].address",
			`sleds[1].zones[0].kind: "Crucible" is not a zone kind`}},
		{"zones", `
database: {backend: sqlite, url: rel.db}
sleds:
  - id: 1a5ec001-0000-4000-8000-000000000001
    address: "sled-1"
    zones:
      - {id: 2e000000-0000-4000-8000-000000000001, kind: bogus, pool: tank, address: "0.0.0.0:123"}
      - {id: 2e000000-0000-4000-8000-000000000002, kind: internal_ntp, pool: oxp_0b0e0000-0000-4000-8000-0000000c0101, address: "10.0.0.1:123",
         nexus: {external_address: "0.0.0.0:12220", metrics_address: "0.0.0.0:12223"}}
      - {id: 2e000000-0000-4000-8000-000000000003, kind: boundary_ntp, pool: oxp_0b0e0000-0000-4000-8000-0000000c0101, address: "10.0.0.1:124"}
      - {id: 2e000000-0000-4000-8000-000000000004, kind: nexus, pool: oxp_0b0e0000-0000-4000-8000-0000000c0101, address: "10.0.0.1:12221"}
`, []string{`database.url: "rel.db" must be an absolute path`, `sleds[0].address: "sled-1" is not host:port`,
			`sleds[0].zones[0].kind: "bogus" is not a zone kind`, `sleds[0].zones[0].pool: "tank" is not a zpool name`,
			`sleds[0].zones[0].address: "0.0.0.0:123" needs a specific address`, "sleds[0].zones[1].nexus: is only for a nexus zone",
			"sleds[0].zones[2].kind: a sled runs one NTP zone", "sleds[0].zones[3].nexus: is required for a nexus zone"}},
		{"empty", `database: {backend: mysql}`, []string{`database.backend: "mysql" is not sqlite or postgres`,
			"database.url: is required", "sleds: a rack needs at least one sled"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "plan.yaml")
			if err := os.WriteFile(path, []byte(tc.plan), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := racksetup.LoadPlan(path)
			if err == nil {
				t.Fatal("the plan was accepted")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the error does not say %q:\n%v", want, err)
				}
			}
		})
	}
	if _, err := racksetup.LoadPlan(""); err == nil || !strings.Contains(err.Error(), "--plan") {
		t.Errorf("no plan file: %v, want an error naming --plan", err)
	}
}

// The plans this repository ships are valid.
func TestTheShippedRackPlansAreValid(t *testing.T) {
	for _, name := range []string{"rack-plan-compose.yaml", "rack-plan-by-hand.yaml"} {
		if _, err := racksetup.LoadPlan(filepath.Join("..", "..", "..", "deploy", "config", name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
