package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
)

// The simulated sled's other knobs: how its hypervisor moves VMMs, and its
// reconciler's explicit poke.

func hypervisorCommand(sled *target) *cobra.Command {
	var delay string
	mode := &cobra.Command{
		Use:   "mode (auto | explicit)",
		Short: "Choose how simulated VMM transitions complete: after a delay (auto) or only when stepped (explicit)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &sledagentv1.SetHypervisorModeRequest{}
			said := "hypervisor mode explicit: VMM transitions complete only on \"sledctl vmm step\""
			switch args[0] {
			case "auto":
				req.Mode = sledagentv1.HypervisorMode_HYPERVISOR_MODE_AUTO
				said = "hypervisor mode auto: each VMM transition completes after the sled's transition delay"
			case "explicit":
				req.Mode = sledagentv1.HypervisorMode_HYPERVISOR_MODE_EXPLICIT
			default:
				return fmt.Errorf("mode: %q is not auto or explicit", args[0])
			}
			if delay != "" {
				d, err := parseDuration("transition_delay", delay)
				if err != nil {
					return err
				}
				req.TransitionDelay = durationpb.New(d)
				said += fmt.Sprintf(" (auto transitions now take %s)", d)
			}
			return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
				_, err := c.sim.SetHypervisorMode(ctx, req)
				return err
			}, "%s", said)
		},
	}
	mode.Flags().StringVar(&delay, "transition-delay", "", "how long each auto transition takes; by default unchanged")
	hypervisor := &cobra.Command{Use: "hypervisor", Short: "The sled's simulated hypervisor"}
	hypervisor.AddCommand(mode)
	return hypervisor
}

func vmmCommand(sled *target) *cobra.Command {
	var drain bool
	step := &cobra.Command{
		Use:   "step [VMM_ID]",
		Short: "Complete the next pending transition of a VMM (none named: of every VMM), or all of them with --drain",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var sel vmmSelection
			if err := sel.parse(args, ""); err != nil {
				return err
			}
			var resp *sledagentv1.StepVmmsResponse
			err := call(cmd.Context(), *sled, func(ctx context.Context, c clients) (err error) {
				resp, err = c.sim.StepVmms(ctx, &sledagentv1.StepVmmsRequest{VmmId: sel.vmm, Drain: drain})
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d VMM transitions completed\n", resp.GetTransitions())
			return nil
		},
	}
	step.Flags().BoolVar(&drain, "drain", false, "step until no transition can complete (a hung stop never does)")
	vmm := &cobra.Command{Use: "vmm", Short: "The sled's simulated VMMs"}
	vmm.AddCommand(step)
	return vmm
}

func reconcilerCommand(sled *target) *cobra.Command {
	poke := &cobra.Command{
		Use:   "poke",
		Short: "Ask the zone reconciler for a pass now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
				_, err := c.sim.PokeReconciler(ctx, &sledagentv1.PokeReconcilerRequest{})
				return err
			}, "reconciler poked: a pass starts now (\"sledctl inventory\" shows it)")
		},
	}
	reconciler := &cobra.Command{Use: "reconciler", Short: "The sled's zone reconciler"}
	reconciler.AddCommand(poke)
	return reconciler
}
