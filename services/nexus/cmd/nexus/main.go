// Command nexus runs one nexus replica: see README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/rackplane/rackplane/pkg/logging"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/config"
)

func main() {
	if err := command().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "nexus:", err)
		os.Exit(1)
	}
}

func command() *cobra.Command {
	cmd := &cobra.Command{
		Use:           "nexus",
		Short:         "Run one nexus replica",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	flags := config.BindFlags(cmd.Flags())
	cmd.AddCommand(tokenCommand())
	cmd.RunE = func(*cobra.Command, []string) error {
		cfg, err := flags.Resolve()
		if err != nil {
			return err
		}
		return run(cfg)
	}
	return cmd
}

func run(cfg config.Config) error {
	log, err := logging.New(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing to do if stderr is gone
	// Subscribe before starting anything, so a SIGTERM during start-up still
	// stops nexus gracefully.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	srv, err := nexus.New(context.Background(), cfg, log)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	select {
	case err := <-served:
		return err
	case <-signals:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	return <-served
}
