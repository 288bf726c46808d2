package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
)

// tokenCommand mints API tokens straight in the database, as an operator
// with access to the nexus config would: the external API has no endpoint
// that hands out fleet-admin power.
func tokenCommand() *cobra.Command {
	token := &cobra.Command{Use: "token", Short: "Manage API tokens"}
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a bearer token and print it (shown only once)",
		Args:  cobra.NoArgs,
	}
	flags := config.BindFlags(create.Flags())
	var (
		principal     string
		fleetAdmin    bool
		collaborators []string
		viewers       []string
		ttl           time.Duration
	)
	create.Flags().StringVar(&principal, "principal", "", "who the token acts as")
	create.Flags().BoolVar(&fleetAdmin, "fleet-admin", false, "grant the fleet admin role")
	create.Flags().StringSliceVar(&collaborators, "project-collaborator", nil, "grant collaborator on this project (name or id), repeatable")
	create.Flags().StringSliceVar(&viewers, "project-viewer", nil, "grant viewer on this project (name or id), repeatable")
	create.Flags().DurationVar(&ttl, "ttl", 0, "lifetime of the token; 0 never expires")
	create.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := flags.Resolve()
		if err != nil {
			return err
		}
		var grants []app.Grant
		if fleetAdmin {
			grants = append(grants, app.Grant{FleetAdmin: true})
		}
		for _, p := range collaborators {
			grants = append(grants, app.Grant{Project: p, Role: "collaborator"})
		}
		for _, p := range viewers {
			grants = append(grants, app.Grant{Project: p, Role: "viewer"})
		}
		ctx := context.Background()
		ds, err := datastore.Open(ctx, datastore.Backend(cfg.DatabaseBackend), cfg.DatabaseURL, zap.NewNop())
		if err != nil {
			return err
		}
		defer ds.Close()
		secret, err := app.New(ds, nil, nil, zap.NewNop()).TokenCreate(ctx, principal, grants, ttl)
		if err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), secret)
		return nil
	}
	token.AddCommand(create)
	return token
}
