package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

// zonesFile is the file format of `zones put`: the wire config with zone
// kinds written the way operators say them ("nexus", "internal_ntp").
type zonesFile struct {
	Generation uint64 `json:"generation"`
	Zones      []struct {
		ID             string `json:"id"`
		Kind           string `json:"kind"`
		FilesystemPool string `json:"filesystem_pool"`
		Address        string `json:"address"`
		Nexus          *struct {
			ExternalAddress string `json:"external_address"`
			MetricsAddress  string `json:"metrics_address"`
			DatabaseBackend string `json:"database_backend"`
			DatabaseURL     string `json:"database_url"`
		} `json:"nexus"`
	} `json:"zones"`
}

func zonesCommand(sled *target) *cobra.Command {
	zones := &cobra.Command{Use: "zones", Short: "Manage the sled's zones config"}
	put := &cobra.Command{
		Use:   "put FILE",
		Short: "Ledger the zones config in FILE (JSON or YAML) on the sled",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := readZonesFile(args[0])
			if err != nil {
				return err
			}
			var resp *sledagentv1.EnsureZonesResponse
			err = call(cmd.Context(), *sled, func(ctx context.Context, c clients) (err error) {
				resp, err = c.agent.EnsureZones(ctx, &sledagentv1.EnsureZonesRequest{Config: cfg})
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "zones config generation %d ledgered (%d zones); the sled reconciles it in the background\n",
				resp.GetLedgeredGeneration(), len(cfg.GetZones()))
			return nil
		},
	}
	zones.AddCommand(put)
	return zones
}

func readZonesFile(path string) (*sledagentv1.OmicronZonesConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := parseZonesFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// parseZonesFile reads a zones file's YAML or JSON into the wire config.
func parseZonesFile(data []byte) (*sledagentv1.OmicronZonesConfig, error) {
	asJSON, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var f zonesFile
	dec := json.NewDecoder(strings.NewReader(string(asJSON)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	out := &sledagentv1.OmicronZonesConfig{Generation: f.Generation}
	for i, z := range f.Zones {
		kind := zoneconfig.Kind(strings.ToLower(strings.TrimPrefix(z.Kind, "ZONE_KIND_"))).Proto()
		if kind == sledagentv1.ZoneKind_ZONE_KIND_UNSPECIFIED {
			return nil, fmt.Errorf("zones[%d].kind: unknown zone kind %q", i, z.Kind)
		}
		zone := &sledagentv1.OmicronZoneConfig{Id: z.ID, Kind: kind, FilesystemPool: z.FilesystemPool, Address: z.Address}
		if n := z.Nexus; n != nil {
			zone.Nexus = &sledagentv1.NexusZoneDetails{ExternalAddress: n.ExternalAddress, MetricsAddress: n.MetricsAddress,
				DatabaseBackend: n.DatabaseBackend, DatabaseUrl: n.DatabaseURL}
		}
		out.Zones = append(out.Zones, zone)
	}
	return out, nil
}
