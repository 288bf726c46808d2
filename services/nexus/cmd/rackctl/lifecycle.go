package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"
	"github.com/spf13/cobra"
)

// action is a command that moves an instance, and the state --wait waits
// for (none: no --wait).
type action struct {
	name  string
	short string
	call  func(ctx context.Context, c *client, r instanceRef) ([]byte, error)
	goal  *goal
}

var instanceActions = []action{
	{name: "start", short: "Start a stopped or failed instance", goal: &toRunning,
		call: func(ctx context.Context, c *client, r instanceRef) ([]byte, error) {
			return c.sdkOne(func(sdk *oxide.Client) error {
				_, err := sdk.InstanceStart(ctx, oxide.InstanceStartParams{Project: oxide.NameOrId(r.project), Instance: oxide.NameOrId(r.instance)})
				return err
			})
		}},
	{name: "stop", short: "Stop an instance", goal: &toStopped,
		call: func(ctx context.Context, c *client, r instanceRef) ([]byte, error) {
			return c.sdkOne(func(sdk *oxide.Client) error {
				_, err := sdk.InstanceStop(ctx, oxide.InstanceStopParams{Project: oxide.NameOrId(r.project), Instance: oxide.NameOrId(r.instance)})
				return err
			})
		}},
	{name: "reboot", short: "Reboot a running instance",
		call: func(ctx context.Context, c *client, r instanceRef) ([]byte, error) {
			return c.sdkOne(func(sdk *oxide.Client) error {
				_, err := sdk.InstanceReboot(ctx, oxide.InstanceRebootParams{Project: oxide.NameOrId(r.project), Instance: oxide.NameOrId(r.instance)})
				return err
			})
		}},
	{name: "force-terminate", short: "Terminate every VMM of an instance at once, even a wedged one; answers it stopped or failed",
		goal: &toStopped,
		call: func(ctx context.Context, c *client, r instanceRef) ([]byte, error) {
			return c.call(ctx, http.MethodPost, r.path("/force-terminate"), nil)
		}},
}

func instanceActionCommand(s *session, ref func(string) (instanceRef, error), a action) *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   a.name + " PROJECT/NAME",
		Short: a.short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := ref(args[0])
			if err != nil {
				return err
			}
			if !w.wait {
				return runObject(s, cmd, instanceColumns, func(c *client) ([]byte, error) { return a.call(cmd.Context(), c, r) })
			}
			return runObject(s, cmd, instanceColumns, func(c *client) ([]byte, error) {
				before, err := c.instanceView(cmd.Context(), r)
				if err != nil {
					return nil, err
				}
				return w.follow(cmd, c, r, *a.goal, stateOf(before), func() ([]byte, error) { return a.call(cmd.Context(), c, r) })
			})
		},
	}
	if a.goal != nil {
		w.bind(cmd, *a.goal)
	}
	return cmd
}

func instanceCreateCommand(s *session) *cobra.Command {
	var (
		ncpus                    uint16
		memory, hostname, policy string
		description              string
		start                    bool
		w                        waitFlags
	)
	cmd := &cobra.Command{
		Use:   "create PROJECT/NAME",
		Short: "Create an instance, stopped unless --start",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseInstanceRef(args[0], cmd.Flag("project").Value.String())
			if err != nil {
				return err
			}
			if r.project == "" {
				return fmt.Errorf("instance %q: a new instance is named PROJECT/NAME", args[0])
			}
			size, err := parseBytes(memory)
			if err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			if w.wait && !start {
				return fmt.Errorf("--wait waits for a start: give --start too")
			}
			if hostname == "" {
				hostname = r.instance
			}
			body := &oxide.InstanceCreate{Name: oxide.Name(r.instance), Description: description, Hostname: oxide.Hostname(hostname),
				Memory: oxide.ByteCount(size), Ncpus: oxide.InstanceCpuCount(ncpus), Start: &start,
				AutoRestartPolicy: oxide.InstanceAutoRestartPolicy(policy)}
			create := func(c *client) ([]byte, error) {
				return c.sdkOne(func(sdk *oxide.Client) error {
					_, err := sdk.InstanceCreate(cmd.Context(), oxide.InstanceCreateParams{Project: oxide.NameOrId(r.project), Body: body})
					return err
				})
			}
			return runObject(s, cmd, instanceColumns, func(c *client) ([]byte, error) {
				if !w.wait {
					return create(c)
				}
				return w.follow(cmd, c, r, toRunning, "", func() ([]byte, error) { return create(c) })
			})
		},
	}
	f := cmd.Flags()
	f.Uint16Var(&ncpus, "ncpus", 1, "vCPUs")
	f.StringVar(&memory, "memory", "1GiB", "memory, a whole number of GiB (e.g. 1GiB, 4GiB)")
	f.StringVar(&hostname, "hostname", "", "the guest's hostname (default the instance's name)")
	f.StringVar(&description, "description", "", "what the instance is for")
	f.StringVar(&policy, "auto-restart-policy", "", "never or best_effort (default the API's: best_effort)")
	f.BoolVar(&start, "start", false, "start it once created")
	w.bind(cmd, toRunning)
	return cmd
}

func instanceUpdateCommand(s *session, ref func(string) (instanceRef, error)) *cobra.Command {
	var (
		ncpus          uint16
		memory, policy string
	)
	cmd := &cobra.Command{
		Use:   "update PROJECT/NAME [--ncpus N] [--memory SIZE] [--auto-restart-policy POLICY]",
		Short: "Change a stopped instance's vCPUs, memory or auto-restart policy; what is not given stays (refused if the instance changed meanwhile)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := ref(args[0])
			if err != nil {
				return err
			}
			var size uint64
			if cmd.Flags().Changed("memory") {
				if size, err = parseBytes(memory); err != nil {
					return fmt.Errorf("--memory: %w", err)
				}
			}
			return runObject(s, cmd, instanceColumns, func(c *client) ([]byte, error) {
				// The API's PUT sets every field: what the user did not
				// give is sent as the instance has it now, on condition
				// (If-Match) that it has not changed since it was read,
				// so that another operator's change is never put back.
				body, err := c.instanceView(cmd.Context(), r)
				if err != nil {
					return nil, err
				}
				now, err := decode[struct {
					instanceJSON
					TimeModified string `json:"time_modified"`
				}](body)
				if err != nil {
					return nil, err
				}
				update := map[string]any{"ncpus": now.Ncpus, "memory": now.Memory, "auto_restart_policy": now.AutoRestartPolicy}
				if cmd.Flags().Changed("ncpus") {
					update["ncpus"] = ncpus
				}
				if cmd.Flags().Changed("memory") {
					update["memory"] = size
				}
				if cmd.Flags().Changed("auto-restart-policy") {
					update["auto_restart_policy"] = policy
				}
				return c.callWith(cmd.Context(), http.MethodPut, "/v1/instances/"+now.ID, update,
					map[string]string{"If-Match": now.TimeModified})
			})
		},
	}
	f := cmd.Flags()
	f.Uint16Var(&ncpus, "ncpus", 0, "vCPUs")
	f.StringVar(&memory, "memory", "", "memory, a whole number of GiB (e.g. 4GiB)")
	f.StringVar(&policy, "auto-restart-policy", "", "never or best_effort")
	return cmd
}

// waitFlags are --wait and --timeout of a command that moves an instance.
type waitFlags struct {
	wait    bool
	timeout time.Duration
}

func (w *waitFlags) bind(cmd *cobra.Command, g goal) {
	cmd.Flags().BoolVar(&w.wait, "wait", false, "wait until the instance is "+g.String()+", showing each state it passes")
	cmd.Flags().DurationVar(&w.timeout, "timeout", 2*time.Minute, "with --wait: give up (exit 1) after this long")
}
