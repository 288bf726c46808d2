// Command sledctl talks to one sled-agent: it puts a zones config from a
// JSON or YAML file and prints the sled's inventory.
//
//	sledctl --addr 127.0.0.1:12345 --tls-dir .local/cluster/pki/operator zones put zones.yaml
//	sledctl --addr 127.0.0.1:12345 --tls-dir .local/cluster/pki/operator inventory [--output json]
//
// It speaks to the sled as the operator, over mutual TLS with the
// operator's certificate (`nexus rack-certs` writes it into
// <dir>/operator); SLEDCTL_TLS_DIR stands for --tls-dir.
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

// target is the sled-agent sledctl talks to, and as whom.
type target struct {
	addr   string
	tlsDir string
}

func newRoot(out io.Writer) *cobra.Command {
	var sled target
	root := &cobra.Command{
		Use:           "sledctl",
		Short:         "Operate one sled-agent",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.PersistentFlags().StringVar(&sled.addr, "addr", "127.0.0.1:12345", "sled-agent gRPC address")
	root.PersistentFlags().StringVar(&sled.tlsDir, "tls-dir", os.Getenv("SLEDCTL_TLS_DIR"),
		"the operator's rack certificates (ca.crt, tls.crt, tls.key); default $SLEDCTL_TLS_DIR")
	root.AddCommand(zonesCommand(&sled), inventoryCommand(&sled))
	return root
}
