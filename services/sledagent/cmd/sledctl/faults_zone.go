package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
)

func zoneFaultCommand(sled *target) *cobra.Command {
	zone := &cobra.Command{Use: "zone", Short: "Faults of the sled's zones (ZONE_ID left out: every zone)"}
	zone.AddCommand(failStartCommand(sled), failShutdownCommand(sled), hangShutdownCommand(sled), releaseShutdownCommand(sled),
		zoneLatencyCommand(sled), &cobra.Command{
			Use:   "clear",
			Short: "Clear every zone fault, releasing hung halts",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
					_, err := c.sim.ClearZoneFaults(ctx, &sledagentv1.ClearZoneFaultsRequest{})
					return err
				}, "zone faults cleared: hung halts go on, starts and shutdowns no longer fail, no latency")
			},
		})
	return zone
}

// zoneTarget parses an optional ZONE_ID: the id, and how to say it.
func zoneTarget(args []string) (id, said string, err error) {
	if len(args) == 0 {
		return "", "any zone", nil
	}
	if id, err = parseID("zone_id", args[0]); err != nil {
		return "", "", err
	}
	return id, "zone " + id, nil
}

func failStartCommand(sled *target) *cobra.Command {
	var count uint32
	var message string
	cmd := &cobra.Command{
		Use:   "fail-start [ZONE_ID]",
		Short: "Make the next starts of a zone fail",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, said, err := zoneTarget(args)
			if err != nil {
				return err
			}
			return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
				_, err := c.sim.FailZoneStart(ctx, &sledagentv1.FailZoneStartRequest{ZoneId: id, Count: count, Message: message})
				return err
			}, "the next %d starts of %s fail%s", count, said, quoted(message))
		},
	}
	cmd.Flags().Uint32Var(&count, "count", 1, "how many attempts fail")
	cmd.Flags().StringVar(&message, "message", "", "the error the zone runtime reports; by default one naming the fault")
	return cmd
}

func failShutdownCommand(sled *target) *cobra.Command {
	var count uint32
	var message, step string
	cmd := &cobra.Command{
		Use:   "fail-shutdown [ZONE_ID]",
		Short: "Make the next attempts at one shutdown step of a zone fail (the zone stays partially shut down)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, said, err := zoneTarget(args)
			if err != nil {
				return err
			}
			wireStep, err := parseShutdownStep(step)
			if err != nil {
				return err
			}
			return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
				_, err := c.sim.FailZoneShutdown(ctx, &sledagentv1.FailZoneShutdownRequest{ZoneId: id, Count: count, Message: message, Step: wireStep})
				return err
			}, "the next %d attempts at %s of %s fail%s", count, step, said, quoted(message))
		},
	}
	cmd.Flags().Uint32Var(&count, "count", 1, "how many attempts fail")
	cmd.Flags().StringVar(&message, "message", "", "the error the zone runtime reports; by default one naming the fault")
	cmd.Flags().StringVar(&step, "step", "halt-and-remove", "the step that fails: "+strings.Join(shutdownStepNames(), ", "))
	return cmd
}

// shutdownStepNames are the shutdown steps as the command line writes
// them: SHUTDOWN_STEP_HALT_AND_REMOVE is halt-and-remove.
func shutdownStepNames() []string {
	var names []string
	for n := int32(1); ; n++ {
		name, ok := sledagentv1.ShutdownStep_name[n]
		if !ok {
			return names
		}
		names = append(names, strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "SHUTDOWN_STEP_"), "_", "-")))
	}
}

func parseShutdownStep(s string) (sledagentv1.ShutdownStep, error) {
	wire := "SHUTDOWN_STEP_" + strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
	step, ok := sledagentv1.ShutdownStep_value[wire]
	if !ok || step == 0 {
		return 0, fmt.Errorf("step: %q is not one of %s", s, strings.Join(shutdownStepNames(), ", "))
	}
	return sledagentv1.ShutdownStep(step), nil
}

func hangShutdownCommand(sled *target) *cobra.Command {
	return &cobra.Command{
		Use:   "hang-shutdown [ZONE_ID]",
		Short: "Make halting a zone hang, as a zone whose processes will not die, until released",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, said, err := zoneTarget(args)
			if err != nil {
				return err
			}
			release := strings.TrimSpace("sledctl fault zone release-shutdown " + id)
			return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
				_, err := c.sim.HangZoneShutdown(ctx, &sledagentv1.HangZoneShutdownRequest{ZoneId: id})
				return err
			}, "halting %s now hangs until %q or \"sledctl fault clear\"", said, release)
		},
	}
}

func releaseShutdownCommand(sled *target) *cobra.Command {
	return &cobra.Command{
		Use:   "release-shutdown [ZONE_ID]",
		Short: "Let halts that hang-shutdown hung go on (without ZONE_ID: the hang set for any zone)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, said, err := zoneTarget(args)
			if err != nil {
				return err
			}
			return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
				_, err := c.sim.ReleaseZoneShutdown(ctx, &sledagentv1.ReleaseZoneShutdownRequest{ZoneId: id})
				return err
			}, "halts of %s hung by hang-shutdown go on", said)
		},
	}
}

func zoneLatencyCommand(sled *target) *cobra.Command {
	return &cobra.Command{
		Use:   "latency DURATION",
		Short: "Delay every zone start and every shutdown step by DURATION (0 for none)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDuration("latency", args[0])
			if err != nil {
				return err
			}
			return callAndSay(cmd, *sled, func(ctx context.Context, c clients) error {
				_, err := c.sim.SetZoneLatency(ctx, &sledagentv1.SetZoneLatencyRequest{Start: durationpb.New(d), ShutdownStep: durationpb.New(d)})
				return err
			}, "every zone start and shutdown step now waits %s first", d)
		},
	}
}
