package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/rackplane/rackplane/pkg/logging"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/services/nexus/racksetup"
)

// rackSetupCommand sets a rack up from a plan file (SPEC Z11): what
// docker-compose runs once its sled-agents are up.
func rackSetupCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rack-setup",
		Short: "Set a rack up from a plan: record it, push the sleds their zones, wait for the nexus zones",
		Args:  cobra.NoArgs,
	}
	var (
		plan       string
		readyBound time.Duration
		logLevel   string
		tlsDir     string
	)
	cmd.Flags().StringVar(&plan, "plan", "", "the rack plan (YAML or JSON): database, sleds, zones")
	cmd.Flags().DurationVar(&readyBound, "ready-timeout", 2*time.Minute, "bound on the sled-agents and the nexus zones coming up")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&tlsDir, "tls-dir", "", "the operator's rack certificates (ca.crt, tls.crt, tls.key), from `nexus rack-certs`")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		p, err := racksetup.LoadPlan(plan)
		if err != nil {
			return err
		}
		if tlsDir == "" {
			return errors.New("--tls-dir is required: rack setup speaks to the sleds and the replicas as the operator")
		}
		trust, err := rackpki.LoadDir(tlsDir)
		if err != nil {
			return fmt.Errorf("--tls-dir: %w", err)
		}
		log, err := logging.New(logLevel, "console")
		if err != nil {
			return err
		}
		defer log.Sync() //nolint:errcheck // nothing to do if stderr is gone
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		replicas, err := racksetup.Run(ctx, p, racksetup.Options{ReadyBound: readyBound, Log: log, Trust: trust})
		if err != nil {
			return err
		}
		for _, n := range replicas {
			fmt.Fprintf(cmd.OutOrStdout(), "nexus %s on sled %s: internal %s, API %s\n", n.ID, n.SledID, n.InternalAddress, n.ExternalAddress)
		}
		return nil
	}
	return cmd
}
