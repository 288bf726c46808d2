package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
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
			err = call(cmd.Context(), *sled, func(ctx context.Context, client sledagentv1.SledAgentClient) (err error) {
				resp, err = client.EnsureZones(ctx, &sledagentv1.EnsureZonesRequest{Config: cfg})
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

// call runs one RPC against the sled-agent at addr, bounded in time, and
// renders its error for a person.
func call(ctx context.Context, sled target, rpc func(context.Context, sledagentv1.SledAgentClient) error) error {
	if sled.tlsDir == "" {
		return errors.New("--tls-dir is required: sled-agents answer the operator's certificate only")
	}
	trust, err := rackpki.LoadDir(sled.tlsDir)
	if err != nil {
		return fmt.Errorf("--tls-dir: %w", err)
	}
	conn, err := grpcconn.Dial(sled.addr, trust, rackpki.Identity{Kind: rackpki.Sled}, 0)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := rpc(ctx, sledagentv1.NewSledAgentClient(conn)); err != nil {
		return describe(err)
	}
	return nil
}

// describe renders an API error for a person: the code, the reason and
// every field violation on its own line.
func describe(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s", st.Code())
	if reason := apierror.Reason(err); reason != "" {
		fmt.Fprintf(&b, " (%s)", reason)
	}
	fmt.Fprintf(&b, ": %s", st.Message())
	if violations := apierror.FieldViolations(err); len(violations) > 0 {
		b.Reset()
		fmt.Fprintf(&b, "%s: the sled refused the config:", st.Code())
		for _, v := range violations {
			fmt.Fprintf(&b, "\n  %s: %s", v.Field, v.Description)
		}
	}
	return fmt.Errorf("%s", b.String())
}
