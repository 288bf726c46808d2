package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
)

// faultCommand is the tree over SledAgentSim (V7): every fault a simulated
// sled can inject, from a terminal.
func faultCommand(sled *target) *cobra.Command {
	fault := &cobra.Command{
		Use:   "fault",
		Short: "Inject faults into a simulated sled (its sled-agent must run with fault_injection on)",
	}
	fault.AddCommand(vmmFaultCommand(sled), zoneFaultCommand(sled), rpcFaultCommand(sled), clearAllCommand(sled))
	return fault
}

// clearAllCommand clears every fault kind: ClearVmmFaults lifts the VMM and
// RPC faults, ClearZoneFaults the zone ones.
func clearAllCommand(sled *target) *cobra.Command {
	return &cobra.Command{
		Use:   "clear",
		Short: "Clear every fault: VMM, zone, RPC black hole and latency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
				if _, err := c.sim.ClearVmmFaults(ctx, &sledagentv1.ClearVmmFaultsRequest{}); err != nil {
					return err
				}
				_, err := c.sim.ClearZoneFaults(ctx, &sledagentv1.ClearZoneFaultsRequest{})
				return err
			}, "every fault cleared: hung VMM stops and zone halts go on, nothing fails, the black hole is lifted, no latency")
		},
	}
}

func vmmFaultCommand(sled *target) *cobra.Command {
	vmm := &cobra.Command{Use: "vmm", Short: "Faults of the sled's VMMs"}
	vmm.AddCommand(hangStopCommand(sled), forgetCommand(sled), failEnsureStateCommand(sled), &cobra.Command{
		Use:   "clear",
		Short: "Clear every VMM and RPC fault: hung stops go on, the black hole is lifted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
				_, err := c.sim.ClearVmmFaults(ctx, &sledagentv1.ClearVmmFaultsRequest{})
				return err
			}, "VMM and RPC faults cleared: hung stops go on, EnsureState answers, the black hole is lifted, no latency")
		},
	})
	return vmm
}

func hangStopCommand(sled *target) *cobra.Command {
	var sel vmmSelection
	cmd := &cobra.Command{
		Use:   "hang-stop (VMM_ID | --instance INSTANCE_ID)",
		Short: "Make a VMM's stop hang, as an unresponsive Propolis would, until the faults are cleared",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sel.parse(args, "VMM_ID or --instance INSTANCE_ID"); err != nil {
				return err
			}
			var refs []vmmRef
			err := call(cmd.Context(), *sled, func(ctx context.Context, c clients) (err error) {
				if refs, err = sel.resolve(ctx, c); err != nil {
					return err
				}
				for _, r := range refs {
					if _, err := c.sim.HangVmmStop(ctx, &sledagentv1.HangVmmStopRequest{VmmId: r.id}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, r := range refs {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: its stop now hangs until \"sledctl fault clear\"\n", r)
			}
			return nil
		},
	}
	sel.addFlag(cmd)
	return cmd
}

func forgetCommand(sled *target) *cobra.Command {
	var sel vmmSelection
	var all bool
	cmd := &cobra.Command{
		Use:   "forget (VMM_ID | --instance INSTANCE_ID | --all)",
		Short: "Make the sled forget VMMs without telling nexus, as a restarted sled-agent would",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if all && (len(args) > 0 || sel.instanceFlag != "") {
				return errors.New("give VMM_ID, --instance or --all, only one")
			}
			if !all {
				if err := sel.parse(args, "VMM_ID, --instance INSTANCE_ID or --all"); err != nil {
					return err
				}
			}
			var refs []vmmRef
			err := call(cmd.Context(), *sled, func(ctx context.Context, c clients) (err error) {
				if all {
					refs, err = forgetAll(ctx, c)
					return err
				}
				if refs, err = sel.resolve(ctx, c); err != nil {
					return err
				}
				for _, r := range refs {
					if _, err := c.sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: r.id}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			switch {
			case all && len(refs) == 0:
				fmt.Fprintln(cmd.OutOrStdout(), "the sled runs no VMM: nothing to forget")
				return nil
			case all:
				fmt.Fprintf(cmd.OutOrStdout(), "the sled forgot its %d VMMs without telling nexus, as a restarted sled-agent would\n", len(refs))
				return nil
			}
			for _, r := range refs {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: forgotten without telling nexus, as a restarted sled-agent would\n", r)
			}
			return nil
		},
	}
	sel.addFlag(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "forget every VMM the sled runs")
	return cmd
}

// forgetAll forgets every VMM the inventory lists. One that ends on its
// own meanwhile is gone all the same, which is what was asked.
func forgetAll(ctx context.Context, c clients) ([]vmmRef, error) {
	inv, err := c.agent.GetInventory(ctx, &sledagentv1.GetInventoryRequest{})
	if err != nil {
		return nil, err
	}
	refs := make([]vmmRef, 0, len(inv.GetVmms()))
	for _, v := range inv.GetVmms() {
		_, err := c.sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: v.GetVmmId()})
		if err != nil && status.Code(err) != codes.NotFound {
			return nil, err
		}
		refs = append(refs, vmmRef{id: v.GetVmmId(), instance: v.GetInstanceId()})
	}
	return refs, nil
}

func failEnsureStateCommand(sled *target) *cobra.Command {
	var sel vmmSelection
	var count uint32
	var code, message string
	cmd := &cobra.Command{
		Use:   "fail-ensure-state [VMM_ID | --instance INSTANCE_ID]",
		Short: "Make the next EnsureState calls for a VMM (none named: for any VMM) fail",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sel.parse(args, ""); err != nil {
				return err
			}
			grpcCode, err := parseCode(code)
			if err != nil {
				return err
			}
			refs := []vmmRef{{}}
			err = call(cmd.Context(), *sled, func(ctx context.Context, c clients) (err error) {
				if !sel.any() {
					if refs, err = sel.resolve(ctx, c); err != nil {
						return err
					}
				}
				for _, r := range refs {
					req := &sledagentv1.FailEnsureStateRequest{VmmId: r.id, Count: count, Code: uint32(grpcCode), Message: message}
					if _, err := c.sim.FailEnsureState(ctx, req); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, r := range refs {
				who := r.String()
				if r.id == "" {
					who = "any VMM"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "the next %d EnsureState calls for %s fail with %s%s\n", count, who, grpcCode, quoted(message))
			}
			return nil
		},
	}
	sel.addFlag(cmd)
	cmd.Flags().Uint32Var(&count, "count", 1, "how many calls fail")
	cmd.Flags().StringVar(&code, "code", "internal", "the gRPC code they answer, e.g. unavailable, aborted (not ok or not_found: forget a VMM that is gone)")
	cmd.Flags().StringVar(&message, "message", "", "the error message; by default one naming the fault")
	return cmd
}

// parseCode reads a gRPC code by name ("unavailable") or number; OK is no
// failure, and the wire has no way to say it.
func parseCode(s string) (codes.Code, error) {
	var c codes.Code
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		c = codes.Code(n)
	} else if err := c.UnmarshalJSON([]byte(strconv.Quote(strings.ToUpper(s)))); err != nil {
		return 0, fmt.Errorf("code: %q is not a gRPC code such as unavailable or 14", s)
	}
	if c == codes.OK {
		return 0, errors.New("code: OK is not a failure")
	}
	return c, nil
}

// quoted is ": "message"" for a message the operator chose, nothing for
// the default one.
func quoted(message string) string {
	if message == "" {
		return ""
	}
	return fmt.Sprintf(": %q", message)
}
