package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"
	"github.com/spf13/cobra"
)

// instanceJSON is the part of the API's Instance a table shows (Oxide's,
// with this product's sled_reachability).
type instanceJSON struct {
	ID                  string     `json:"id"`
	Name                string     `json:"name"`
	Memory              uint64     `json:"memory"`
	Ncpus               uint32     `json:"ncpus"`
	RunState            string     `json:"run_state"`
	AutoRestartPolicy   string     `json:"auto_restart_policy"`
	SledReachability    string     `json:"sled_reachability"`
	TimeRunStateUpdated *time.Time `json:"time_run_state_updated"`
}

var instanceColumns = columns[instanceJSON]{
	header: []string{"NAME", "ID", "STATE", "NCPUS", "MEMORY", "AUTO-RESTART", "SLED", "SINCE"},
	row: func(i instanceJSON) []string {
		return []string{i.Name, i.ID, i.RunState, strconv.FormatUint(uint64(i.Ncpus), 10), bytesText(i.Memory),
			i.AutoRestartPolicy, i.SledReachability, timeText(i.TimeRunStateUpdated)}
	},
}

// instanceRef is an instance as the user named it: PROJECT/NAME, NAME
// with --project, or its id.
type instanceRef struct {
	project  string
	instance string
}

func parseInstanceRef(arg, project string) (instanceRef, error) {
	if p, name, ok := strings.Cut(arg, "/"); ok {
		switch {
		case p == "" || name == "" || strings.Contains(name, "/"):
			return instanceRef{}, fmt.Errorf("instance %q: want PROJECT/NAME", arg)
		case project != "" && project != p:
			return instanceRef{}, fmt.Errorf("instance %q is in project %s, but --project says %s", arg, p, project)
		}
		return instanceRef{project: p, instance: name}, nil
	}
	if uuid.Validate(arg) == nil {
		// An id names the instance alone; the API refuses a project with it.
		return instanceRef{instance: arg}, nil
	}
	if project == "" {
		return instanceRef{}, fmt.Errorf("instance %q: name it PROJECT/%s, by id, or with --project", arg, arg)
	}
	return instanceRef{project: project, instance: arg}, nil
}

func (r instanceRef) String() string {
	if r.project == "" {
		return r.instance
	}
	return r.project + "/" + r.instance
}

// path is the instance's extension route with suffix (e.g. "/migrate").
func (r instanceRef) path(suffix string) string {
	p := "/v1/instances/" + url.PathEscape(r.instance) + suffix
	if r.project != "" {
		p += "?project=" + url.QueryEscape(r.project)
	}
	return p
}

func (c *client) instanceView(ctx context.Context, r instanceRef) ([]byte, error) {
	return c.sdkOne(func(sdk *oxide.Client) error {
		_, err := sdk.InstanceView(ctx, oxide.InstanceViewParams{Project: oxide.NameOrId(r.project),
			Instance: oxide.NameOrId(r.instance)})
		return err
	})
}

func instanceCommand(s *session) *cobra.Command {
	var project string
	cmd := &cobra.Command{Use: "instance", Aliases: []string{"instances"}, Short: "Tenants' instances"}
	cmd.PersistentFlags().StringVar(&project, "project", "", "the project of instances named by NAME alone")
	ref := func(arg string) (instanceRef, error) { return parseInstanceRef(arg, project) }
	cmd.AddCommand(instanceListCommand(s, &project), instanceViewCommand(s, ref), instanceCreateCommand(s),
		instanceUpdateCommand(s, ref), instanceDeleteCommand(s, ref), instanceMigrateCommand(s, ref))
	for _, a := range instanceActions {
		cmd.AddCommand(instanceActionCommand(s, ref, a))
	}
	return cmd
}

func instanceListCommand(s *session, project *string) *cobra.Command {
	return &cobra.Command{
		Use:   "list PROJECT",
		Short: "List a project's instances",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := *project
			if len(args) == 1 {
				if p != "" && p != args[0] {
					return fmt.Errorf("project %s given twice: as the argument and as --project %s", args[0], p)
				}
				p = args[0]
			}
			if p == "" {
				return fmt.Errorf("which project? give PROJECT or --project")
			}
			return runList(s, cmd, instanceColumns, func(sdk *oxide.Client) error {
				limit := pageLimit
				_, err := sdk.InstanceListAllPages(cmd.Context(), oxide.InstanceListParams{Project: oxide.NameOrId(p), Limit: &limit})
				return err
			})
		},
	}
}

func instanceViewCommand(s *session, ref func(string) (instanceRef, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "view PROJECT/NAME",
		Short: "Show an instance",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := ref(args[0])
			if err != nil {
				return err
			}
			return runObject(s, cmd, instanceColumns, func(c *client) ([]byte, error) { return c.instanceView(cmd.Context(), r) })
		},
	}
}

func instanceDeleteCommand(s *session, ref func(string) (instanceRef, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "delete PROJECT/NAME",
		Short: "Delete a stopped or failed instance",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := ref(args[0])
			if err != nil {
				return err
			}
			return runDone(s, cmd, "deleted instance "+r.String(), func(c *client) error {
				_, err := c.viaSDK(func(sdk *oxide.Client) error {
					return sdk.InstanceDelete(cmd.Context(), oxide.InstanceDeleteParams{Project: oxide.NameOrId(r.project),
						Instance: oxide.NameOrId(r.instance)})
				})
				return err
			})
		},
	}
}

func instanceMigrateCommand(s *session, ref func(string) (instanceRef, error)) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "migrate PROJECT/NAME --to SLED_ID",
		Short: "Move a running instance to another sled (fleet admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := ref(args[0])
			if err != nil {
				return err
			}
			if to == "" {
				return fmt.Errorf("--to: which sled? give its id (rackctl sled list)")
			}
			return runObject(s, cmd, instanceColumns, func(c *client) ([]byte, error) {
				return c.call(cmd.Context(), http.MethodPost, r.path("/migrate"), map[string]string{"dst_sled_id": to})
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the id of the sled to move it to")
	return cmd
}
