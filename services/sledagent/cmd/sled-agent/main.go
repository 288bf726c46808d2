// Command sled-agent runs the agent of one sled, with the simulated zone
// runtime: see README.md for how to start one and push a zones config.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/logging"
	"github.com/rackplane/rackplane/services/sledagent"
	"github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/process"
)

func main() {
	if err := command().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sled-agent:", err)
		os.Exit(1)
	}
}

func command() *cobra.Command {
	cmd := &cobra.Command{
		Use:           "sled-agent",
		Short:         "Run the agent of one sled: its zones (as processes or simulated) and its VMMs (simulated hypervisor)",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	flags := config.BindFlags(cmd.Flags())
	cmd.AddCommand(healthcheckCommand())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
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

	// Subscribe before starting anything: a SIGTERM that arrives while the
	// agent starts must still stop it gracefully.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	srv, err := sledagent.New(cfg, log)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	select {
	case err := <-served:
		return err
	case sig := <-signals:
		log.Sugar().Infof("received %s; shutting down", sig)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.ShutdownTimeout))
	defer cancel()
	srv.Shutdown(ctx)
	err = <-served
	if os.Getpid() == 1 {
		stopZonesWithTheNamespace(cfg, log)
	}
	return err
}

// stopZonesWithTheNamespace stops the process zones of an agent that is
// its PID namespace's init, a container's entrypoint: there a zone cannot
// outlive the agent (Z8), since the kernel SIGKILLs every process of the
// namespace when init exits, and a nexus zone would never get its graceful
// stop. So they get the stop a zone's shutdown gives them, SIGTERM then
// SIGKILL after zone_stop_timeout, once the reconciler (stopped with the
// agent) can no longer start them again; the next agent starts them (Z10).
// The whole stop is bounded by shutdown_timeout plus zone_stop_timeout,
// which docker-compose.yml's stop_grace_period exceeds.
func stopZonesWithTheNamespace(cfg config.Config, log *zap.Logger) {
	if cfg.ZoneRoot == "" {
		return
	}
	pids, err := process.StopAll(cfg.ZoneRoot, time.Duration(cfg.ZoneStopTimeout))
	if err != nil {
		log.Warn("stopping the zones, which end with this PID namespace", zap.Error(err))
		return
	}
	if len(pids) > 0 {
		log.Info("stopped the zones, which end with this PID namespace", zap.Ints("pids", pids))
	}
}
