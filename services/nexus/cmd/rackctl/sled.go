package main

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"
	"github.com/spf13/cobra"
)

// sledJSON is the part of the API's Sled a table shows (Oxide's, with this
// product's reachability and time_last_seen).
type sledJSON struct {
	ID        string `json:"id"`
	Baseboard struct {
		Serial string `json:"serial"`
	} `json:"baseboard"`
	Policy struct {
		Kind            string `json:"kind"`
		ProvisionPolicy string `json:"provision_policy"`
	} `json:"policy"`
	State                 string     `json:"state"`
	UsableHardwareThreads uint32     `json:"usable_hardware_threads"`
	UsablePhysicalRAM     uint64     `json:"usable_physical_ram"`
	Reachability          string     `json:"reachability"`
	TimeLastSeen          *time.Time `json:"time_last_seen"`
}

var sledColumns = columns[sledJSON]{
	header: []string{"ID", "SERIAL", "STATE", "POLICY", "REACHABILITY", "THREADS", "RAM", "LAST-SEEN"},
	row: func(s sledJSON) []string {
		policy := s.Policy.Kind
		if s.Policy.ProvisionPolicy != "" {
			policy += "/" + s.Policy.ProvisionPolicy
		}
		return []string{s.ID, s.Baseboard.Serial, s.State, policy, s.Reachability,
			strconv.FormatUint(uint64(s.UsableHardwareThreads), 10), bytesText(s.UsablePhysicalRAM), timeText(s.TimeLastSeen)}
	},
}

// sledInstanceJSON is the API's SledInstance.
type sledInstanceJSON struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	ProjectName string `json:"project_name"`
	State       string `json:"state"`
	Ncpus       uint32 `json:"ncpus"`
	Memory      uint64 `json:"memory"`
	MigrationID string `json:"migration_id"`
}

var sledInstanceColumns = columns[sledInstanceJSON]{
	header: []string{"INSTANCE", "ID", "STATE", "NCPUS", "MEMORY", "MIGRATION"},
	row: func(i sledInstanceJSON) []string {
		return []string{i.ProjectName + "/" + i.Name, i.ID, i.State, strconv.FormatUint(uint64(i.Ncpus), 10),
			bytesText(i.Memory), i.MigrationID}
	},
}

func sledCommand(s *session) *cobra.Command {
	cmd := &cobra.Command{Use: "sled", Aliases: []string{"sleds"}, Short: "The rack's sleds (fleet admin)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the sleds, with whether each answers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runList(s, cmd, sledColumns, func(sdk *oxide.Client) error {
				limit := pageLimit
				_, err := sdk.SledListAllPages(cmd.Context(), oxide.SledListParams{Limit: &limit})
				return err
			})
		},
	}, &cobra.Command{
		Use:   "view SLED_ID",
		Short: "Show a sled",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runObject(s, cmd, sledColumns, func(c *client) ([]byte, error) {
				return c.sdkOne(func(sdk *oxide.Client) error {
					_, err := sdk.SledView(cmd.Context(), oxide.SledViewParams{SledId: args[0]})
					return err
				})
			})
		},
	}, &cobra.Command{
		Use:   "instances SLED_ID",
		Short: "List the instances with a VMM on a sled",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runList(s, cmd, sledInstanceColumns, func(sdk *oxide.Client) error {
				limit := pageLimit
				_, err := sdk.SledInstanceListAllPages(cmd.Context(), oxide.SledInstanceListParams{SledId: args[0], Limit: &limit})
				return err
			})
		},
	})
	return cmd
}

// sledPath is a sled's route with suffix.
func sledPath(sled, suffix string) string {
	return "/v1/system/hardware/sleds/" + url.PathEscape(sled) + suffix
}

// zoneJSON is the API's SledZone.
type zoneJSON struct {
	ID            string `json:"id"`
	Kind          string `json:"kind"`
	Address       string `json:"address"`
	Disposition   string `json:"disposition"`
	ConfirmedGone bool   `json:"confirmed_gone"`
	Inventory     string `json:"inventory"`
	InventoryErr  string `json:"inventory_error"`
	WaitingFor    string `json:"waiting_for"`
}

var zoneColumns = columns[zoneJSON]{
	header: []string{"ID", "KIND", "ADDRESS", "DISPOSITION", "INVENTORY", "CONFIRMED-GONE", "WAITING-FOR"},
	row: func(z zoneJSON) []string {
		inventory := z.Inventory
		if z.InventoryErr != "" {
			inventory += ": " + z.InventoryErr
		}
		return []string{z.ID, z.Kind, z.Address, z.Disposition, inventory, boolText(z.ConfirmedGone), z.WaitingFor}
	},
}

// sledZonesJSON is the API's answer for a sled's zones: the zones, and
// where the sled's config and inventory stand.
type sledZonesJSON struct {
	Generation             uint64     `json:"generation"`
	PushedGeneration       uint64     `json:"pushed_generation"`
	PushError              string     `json:"push_error"`
	TimeInventoryCollected *time.Time `json:"time_inventory_collected"`
	LedgeredGeneration     uint64     `json:"ledgered_generation"`
	ReconciledGeneration   uint64     `json:"reconciled_generation"`
	Reconciler             string     `json:"reconciler"`
}

func zoneCommand(s *session) *cobra.Command {
	cmd := &cobra.Command{Use: "zone", Aliases: []string{"zones"}, Short: "The zones nexus put on each sled (fleet admin)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list SLED_ID",
		Short: "List a sled's zones, expunged ones too, with what its inventory says and whether each is confirmed gone",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, c, err := s.start(cmd)
			if err != nil {
				return err
			}
			body, err := c.call(cmd.Context(), http.MethodGet, sledPath(args[0], "/zones"), nil)
			if err != nil {
				return err
			}
			if p.json {
				return p.raw(body)
			}
			sum, err := decode[sledZonesJSON](body)
			if err != nil {
				return err
			}
			p.say("config generation %d, pushed %d%s; inventory %s: ledgered %d, reconciled %d, reconciler %s",
				sum.Generation, sum.PushedGeneration, pushText(sum.PushError), collectedText(sum.TimeInventoryCollected),
				sum.LedgeredGeneration, sum.ReconciledGeneration, cellText(sum.Reconciler))
			zones, _, err := pageOf(body)
			if err != nil {
				return err
			}
			return printItems(p, zones, zoneColumns)
		},
	}, &cobra.Command{
		Use:   "expunge SLED_ID ZONE_ID",
		Short: "Take a zone out of its sled's config for good; an expunged nexus replica claims nothing from then on",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runObject(s, cmd, zoneColumns, func(c *client) ([]byte, error) {
				return c.call(cmd.Context(), http.MethodPost, sledPath(args[0], "/zones/"+url.PathEscape(args[1])+"/expunge"), nil)
			})
		},
	})
	return cmd
}

func pushText(pushErr string) string {
	if pushErr == "" {
		return ""
	}
	return " (last push failed: " + pushErr + ")"
}

func collectedText(t *time.Time) string {
	if t == nil {
		return "not collected yet"
	}
	return "of " + timeText(t)
}
