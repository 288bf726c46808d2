package racktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

// CommandMain is the main of a command that runs a rack (scalebench,
// chaos): it runs run with the arguments, cancelling its context on
// SIGINT or SIGTERM, removes the binaries Build made (a test binary's Main
// does that for tests), and exits 1 with the error named after the
// command; --help exits 0.
func CommandMain(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	removeBuilds()
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
