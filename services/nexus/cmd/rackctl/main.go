// Command rackctl is the rack's operator and tenant CLI, over nexus's REST
// API: the Oxide Go SDK where it covers the call, plain HTTP for this
// product's extensions (force-terminate, migrate, zones, replicas, sagas,
// updater locks, fleet-wide tokens).
//
//	rackctl login --url http://127.0.0.1:12220 --token TOKEN
//	rackctl project (list | view P | create P [--description D] | delete P)
//	rackctl instance list PROJECT
//	rackctl instance create PROJECT/NAME --ncpus 1 --memory 1GiB [--start [--wait]]
//	rackctl instance (view | start | stop | reboot | force-terminate | delete) PROJECT/NAME [--wait]
//	rackctl instance update PROJECT/NAME [--ncpus N] [--memory M] [--auto-restart-policy P]
//	rackctl instance migrate PROJECT/NAME --to SLED_ID
//	rackctl sled (list | view SLED_ID | instances SLED_ID)
//	rackctl zone (list SLED_ID | expunge SLED_ID ZONE_ID)
//	rackctl replica list; rackctl saga (list | stuck); rackctl updater-lock list
//	rackctl token (create --principal P --role R[:PROJECT] | list [--all] | revoke ID [--all])
//	rackctl whoami
//
// An instance is PROJECT/NAME, its id, or NAME with --project. Output is a
// table, or the API's own JSON with -o json. The API's URL and token come
// from --url and --token, else RACKPLANE_URL and RACKPLANE_TOKEN, else the
// config file `rackctl login` writes (--config, RACKPLANE_CONFIG, or
// $XDG_CONFIG_HOME/rackctl/config.yaml). Any error exits 1, with the API's
// error code, message and request id when the API refused.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs one command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "rackctl:", err)
		return 1
	}
	return 0
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "rackctl",
		Short:         "Operate the rack and its instances through nexus's REST API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	s := bindSession(root)
	root.AddCommand(loginCommand(s), whoamiCommand(s), projectCommand(s), instanceCommand(s), sledCommand(s),
		zoneCommand(s), replicaCommand(s), sagaCommand(s), updaterLockCommand(s), tokenCommand(s))
	return root
}
