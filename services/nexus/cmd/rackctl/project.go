package main

import (
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"
	"github.com/spf13/cobra"
)

// projectJSON is the part of the API's Project a table shows.
type projectJSON struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Description string     `json:"description"`
	TimeCreated *time.Time `json:"time_created"`
}

var projectColumns = columns[projectJSON]{
	header: []string{"NAME", "ID", "DESCRIPTION", "CREATED"},
	row: func(p projectJSON) []string {
		return []string{p.Name, p.ID, p.Description, timeText(p.TimeCreated)}
	},
}

func projectCommand(s *session) *cobra.Command {
	cmd := &cobra.Command{Use: "project", Aliases: []string{"projects"}, Short: "Tenants' projects"}
	var description string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a project",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runObject(s, cmd, projectColumns, func(c *client) ([]byte, error) {
				return c.sdkOne(func(sdk *oxide.Client) error {
					_, err := sdk.ProjectCreate(cmd.Context(), oxide.ProjectCreateParams{
						Body: &oxide.ProjectCreate{Name: oxide.Name(args[0]), Description: description}})
					return err
				})
			})
		},
	}
	create.Flags().StringVar(&description, "description", "", "what the project is for")
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the projects",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runList(s, cmd, projectColumns, func(sdk *oxide.Client) error {
				limit := pageLimit
				_, err := sdk.ProjectListAllPages(cmd.Context(), oxide.ProjectListParams{Limit: &limit})
				return err
			})
		},
	}, &cobra.Command{
		Use:   "view PROJECT",
		Short: "Show a project (by name or id)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runObject(s, cmd, projectColumns, func(c *client) ([]byte, error) {
				return c.sdkOne(func(sdk *oxide.Client) error {
					_, err := sdk.ProjectView(cmd.Context(), oxide.ProjectViewParams{Project: oxide.NameOrId(args[0])})
					return err
				})
			})
		},
	}, create, &cobra.Command{
		Use:   "delete PROJECT",
		Short: "Delete a project that has no instances",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDone(s, cmd, "deleted project "+args[0], func(c *client) error {
				_, err := c.viaSDK(func(sdk *oxide.Client) error {
					return sdk.ProjectDelete(cmd.Context(), oxide.ProjectDeleteParams{Project: oxide.NameOrId(args[0])})
				})
				return err
			})
		},
	})
	return cmd
}
