package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
)

// rpcFaultCommand is the faults of the SledAgent service itself, the one
// nexus calls; fault commands and health checks are never touched, so the
// faults can always be lifted.
func rpcFaultCommand(sled *target) *cobra.Command {
	rpc := &cobra.Command{Use: "rpc", Short: "Faults of the sled's SledAgent calls (what nexus calls)"}
	rpc.AddCommand(blackHoleCommand(sled), rpcLatencyCommand(sled), rpcShowCommand(sled))
	return rpc
}

func blackHoleCommand(sled *target) *cobra.Command {
	return &cobra.Command{
		Use:       "black-hole (on | off)",
		Short:     "Make the sled accept SledAgent calls and never answer them (on), or answer again (off)",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var said string
			switch args[0] {
			case "on":
				said = "black hole on: SledAgent calls to this sled are accepted and never answered until \"sledctl fault rpc black-hole off\""
			case "off":
				said = "black hole off: SledAgent calls are answered again, the ones it held go on"
			default:
				return fmt.Errorf("enabled: %q is not on or off", args[0])
			}
			return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
				_, err := c.sim.SetBlackHole(ctx, &sledagentv1.SetBlackHoleRequest{Enabled: args[0] == "on"})
				return err
			}, "%s", said)
		},
	}
}

func rpcLatencyCommand(sled *target) *cobra.Command {
	return &cobra.Command{
		Use:   "latency DURATION",
		Short: "Delay every SledAgent call by DURATION (0 for none)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDuration("latency", args[0])
			if err != nil {
				return err
			}
			return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
				_, err := c.sim.SetRpcLatency(ctx, &sledagentv1.SetRpcLatencyRequest{Latency: durationpb.New(d)})
				return err
			}, "every SledAgent call to this sled now waits %s first", d)
		},
	}
}

func rpcShowCommand(sled *target) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Print the RPC faults in force and the SledAgent calls the black hole holds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var faults *sledagentv1.GetRpcFaultsResponse
			err := call(cmd.Context(), *sled, func(ctx context.Context, c clients) (err error) {
				faults, err = c.sim.GetRpcFaults(ctx, &sledagentv1.GetRpcFaultsRequest{})
				return err
			})
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), faults)
			}
			return printRPCFaults(cmd.OutOrStdout(), faults)
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func printRPCFaults(out io.Writer, f *sledagentv1.GetRpcFaultsResponse) error {
	hole := "off"
	if f.GetBlackHole() {
		hole = "on"
	}
	fmt.Fprintf(out, "black hole  %s\n", hole)
	fmt.Fprintf(out, "latency     %s\n", f.GetLatency().AsDuration())
	if len(f.GetHeldCalls()) == 0 {
		fmt.Fprintln(out, "held calls  none")
		return nil
	}
	fmt.Fprintf(out, "held calls  %d\n\n", len(f.GetHeldCalls()))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "METHOD\tVMM")
	for _, c := range f.GetHeldCalls() {
		vmm := c.GetVmmId()
		if vmm == "" {
			vmm = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\n", c.GetMethod(), vmm)
	}
	return tw.Flush()
}
