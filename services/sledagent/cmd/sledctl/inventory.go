package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
)

func inventoryCommand(sled *target) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "inventory",
		Short: "Print the sled's inventory: resources, ledgered config, reconciler and zones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var inv *sledagentv1.GetInventoryResponse
			err := call(cmd.Context(), *sled, func(ctx context.Context, c clients) (err error) {
				inv, err = c.agent.GetInventory(ctx, &sledagentv1.GetInventoryRequest{})
				return err
			})
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), inv)
			}
			return printInventory(cmd.OutOrStdout(), inv)
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

// outputFlag adds --output: a table for people, or the wire message as
// JSON for scripts.
func outputFlag(cmd *cobra.Command, output *string) {
	cmd.Flags().StringVarP(output, "output", "o", "table", "table or json")
}

func checkOutput(output string) error {
	if output != "table" && output != "json" {
		return fmt.Errorf("--output: %q is not table or json", output)
	}
	return nil
}

// printJSON writes a message with the proto's field names, as the API
// documents them.
func printJSON(out io.Writer, m proto.Message) error {
	data, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(data))
	return err
}

func printInventory(out io.Writer, inv *sledagentv1.GetInventoryResponse) error {
	res := inv.GetResources()
	fmt.Fprintf(out, "sled        %s\n", inv.GetSledId())
	fmt.Fprintf(out, "resources   %d CPUs, %d GiB, zpools %s\n", res.GetNcpus(), res.GetMemoryBytes()>>30,
		strings.Join(res.GetZpools(), ", "))
	if cfg := inv.GetLedgeredConfig(); cfg != nil {
		fmt.Fprintf(out, "ledgered    generation %d, %d zones\n", cfg.GetGeneration(), len(cfg.GetZones()))
	} else {
		fmt.Fprintln(out, "ledgered    nothing yet")
	}
	fmt.Fprintf(out, "reconciler  %s\n", reconcilerStatus(inv.GetReconcilerStatus()))
	if err := printZones(out, inv); err != nil {
		return err
	}
	if len(inv.GetVmms()) == 0 {
		fmt.Fprintln(out, "\nno VMMs")
		return nil
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VMM\tINSTANCE\tSTATE\tGENERATION")
	for _, v := range inv.GetVmms() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", v.GetVmmId(), v.GetInstanceId(),
			strings.ToLower(strings.TrimPrefix(v.GetRuntime().GetState().String(), "VMM_STATE_")), v.GetRuntime().GetGeneration())
	}
	return tw.Flush()
}

func printZones(out io.Writer, inv *sledagentv1.GetInventoryResponse) error {
	last := inv.GetLastReconciliation()
	if last == nil {
		return nil
	}
	fmt.Fprintf(out, "last pass   generation %d, completed %s\n\n", last.GetGeneration(),
		last.GetCompletedAt().AsTime().Format(time.RFC3339))
	addresses := map[string]string{}
	for _, z := range inv.GetLedgeredConfig().GetZones() {
		addresses[z.GetId()] = z.GetAddress()
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ZONE\tKIND\tADDRESS\tRESULT")
	for _, z := range last.GetZones() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", z.GetZoneId(), kindName(z.GetKind()), addresses[z.GetZoneId()], zoneResult(z))
	}
	return tw.Flush()
}

func reconcilerStatus(s *sledagentv1.ReconcilerStatus) string {
	switch {
	case s.GetRunning() != nil:
		return fmt.Sprintf("running generation %d since %s", s.GetRunning().GetGeneration(),
			s.GetRunning().GetStartedAt().AsTime().Format(time.RFC3339))
	case s.GetIdle() != nil:
		return fmt.Sprintf("idle; last pass completed %s in %s",
			s.GetIdle().GetCompletedAt().AsTime().Format(time.RFC3339), s.GetIdle().GetDuration().AsDuration())
	}
	return "not yet run"
}

func kindName(k sledagentv1.ZoneKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "ZONE_KIND_"))
}

func zoneResult(z *sledagentv1.ZoneReconciliation) string {
	e := z.GetError()
	if e == nil {
		return "ok"
	}
	state := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(e.GetState().String(), "ZONE_STATE_"), "_", " "))
	if e.GetState() == sledagentv1.ZoneState_ZONE_STATE_PARTIALLY_SHUT_DOWN {
		state += " at " + strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(e.GetShutdownStep().String(), "SHUTDOWN_STEP_"), "_", " "))
	}
	return fmt.Sprintf("ERROR %s (attempt %d): %s", state, e.GetAttempts(), e.GetMessage())
}
