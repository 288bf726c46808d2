package main

import (
	"testing"

	"google.golang.org/protobuf/proto"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

// FuzzZonesConfig (S6): any zones file, YAML or JSON, and any wire config
// is refused with an error or accepted whole: never a panic, and what the
// sled validates it validates the same way twice.
func FuzzZonesConfig(f *testing.F) {
	f.Add([]byte("generation: 3\nzones:\n  - id: 6a5c1f7e-0d5c-4d0e-9a3e-1f0c4e0b7a11\n    kind: nexus\n    filesystem_pool: oxp_6a5c1f7e-0d5c-4d0e-9a3e-1f0c4e0b7a12\n" +
		"    address: \"[fd00:1122:3344:101::3]:12221\"\n    nexus:\n      external_address: \"[fd00:1122:3344:101::3]:12220\"\n" +
		"      metrics_address: \"[fd00:1122:3344:101::3]:12223\"\n      database_backend: postgres\n      database_url: postgresql://nexus@db/omicron\n"))
	f.Add([]byte(`{"generation": 1, "zones": [{"id": "x", "kind": "internal_ntp", "filesystem_pool": "oxp_a", "address": "[::1]:123"}]}`))
	f.Add([]byte("generation: -1\nzones: {}\n"))
	f.Add([]byte("\x00\xff"))
	sled := zoneconfig.Sled{Zpools: []string{"oxp_6a5c1f7e-0d5c-4d0e-9a3e-1f0c4e0b7a12", "oxp_a"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		if cfg, err := parseZonesFile(data); err == nil {
			_, err1 := zoneconfig.Parse(cfg, sled)
			_, err2 := zoneconfig.Parse(proto.Clone(cfg).(*sledagentv1.OmicronZonesConfig), sled)
			if (err1 == nil) != (err2 == nil) {
				t.Fatalf("the same config validated differently: %v, then %v", err1, err2)
			}
		}
		// The same bytes as the wire message a caller could send.
		var wire sledagentv1.OmicronZonesConfig
		if proto.Unmarshal(data, &wire) == nil {
			zoneconfig.Parse(&wire, sled) //nolint:errcheck // only a panic would be a defect
		}
	})
}
