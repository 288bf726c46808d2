// Command nexus runs one nexus replica: see README.md.
//
// Test hook: the hidden flag --crash-point <template>/<node>/<before|after>
// (for example instance-start/ensure_registered/after), which may be
// repeated, stops the first saga of that template to reach that point for
// good: "before" is once the node's
// started event is durable and before its action runs, "after" is once the
// action took effect and before its outcome is logged. nexus then logs
// "crash point reached" (with the saga id and node) at warn level and that
// saga blocks forever, so that a test can kill -9 the process exactly there
// and check that a restarted nexus finishes or unwinds the saga (SPEC N5).
// It is for tests only: never set it on a real nexus.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/logging"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
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
	var crashAt []string
	cmd.Flags().StringArrayVar(&crashAt, crashPointFlag, nil,
		"test hook: <template>/<node>/<before|after> where the first such saga blocks for good; repeatable (tests only)")
	if err := cmd.Flags().MarkHidden(crashPointFlag); err != nil {
		panic(err) // the flag was just defined
	}
	cmd.AddCommand(tokenCommand(), rackSetupCommand(), rackCertsCommand(), healthcheckCommand())
	cmd.RunE = func(*cobra.Command, []string) error {
		var crash crashPoints
		for _, at := range crashAt {
			c, err := parseCrashPoint(at, sagas.Templates(sagas.Deps{}))
			if err != nil {
				return err
			}
			crash = append(crash, c)
		}
		cfg, err := flags.Resolve()
		if err != nil {
			return err
		}
		return run(cfg, crash)
	}
	return cmd
}

func run(cfg config.Config, crash crashPoints) error {
	log, err := logging.New(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing to do if stderr is gone
	// Subscribe before starting anything, so a SIGTERM during start-up still
	// stops nexus gracefully.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	var opts []nexus.Option
	if len(crash) > 0 {
		hooks, closeHooks, err := crashHooks(cfg, crash, log)
		if err != nil {
			return err
		}
		defer closeHooks()
		opts = append(opts, nexus.WithSagaOptions(saga.WithHooks(hooks)))
	}
	srv, err := nexus.New(context.Background(), cfg, log, opts...)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	expunged := false
	select {
	case err := <-served:
		return err
	case <-signals:
	case <-srv.Expunged():
		// X3: it already refuses every call; now it goes.
		expunged = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.ShutdownTimeout))
	defer cancel()
	srv.Shutdown(ctx)
	if err := <-served; err != nil || !expunged {
		return err
	}
	return errExpunged
}

// errExpunged ends a replica that found itself expunged.
var errExpunged = errors.New("this nexus replica was expunged; it has stopped and never serves again")

// crashHooks builds the --crash-point hooks over a connection of their own
// to nexus's database, where they read which template a saga runs.
func crashHooks(cfg config.Config, crash crashPoints, log *zap.Logger) (saga.Hooks, func(), error) {
	ds, err := datastore.Open(context.Background(), datastore.Backend(cfg.DatabaseBackend), cfg.DatabaseURL, zap.NewNop())
	if err != nil {
		return saga.Hooks{}, nil, fmt.Errorf("opening the database for --%s: %w", crashPointFlag, err)
	}
	log.Warn("test hook armed: a saga will stop for good at the crash point", zap.String("crash_point", crash.String()))
	templateOf := func(ctx context.Context, id uuid.UUID) (string, error) {
		rec, err := ds.SagaGet(ctx, id)
		return rec.Template, err
	}
	return crash.hooks(log.Named("crash-point"), templateOf), func() { ds.Close() }, nil
}
