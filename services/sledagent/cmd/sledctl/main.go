// Command sledctl talks to one sled-agent: it puts a zones config from a
// JSON or YAML file and prints the sled's inventory.
//
//	sledctl --addr 127.0.0.1:12345 zones put zones.yaml
//	sledctl --addr 127.0.0.1:12345 inventory [--output json]
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRoot(os.Stdout).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sledctl:", err)
		os.Exit(1)
	}
}

func newRoot(out io.Writer) *cobra.Command {
	var addr string
	root := &cobra.Command{
		Use:           "sledctl",
		Short:         "Operate one sled-agent",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.PersistentFlags().StringVar(&addr, "addr", "127.0.0.1:12345", "sled-agent gRPC address")
	root.AddCommand(zonesCommand(&addr), inventoryCommand(&addr))
	return root
}
