// Command sledctl talks to one sled-agent: it puts a zones config from a
// JSON or YAML file, prints the sled's inventory, and injects the faults
// of a simulated sled (SPEC V7), so that every seed scenario can be
// reproduced from a terminal.
//
//	sledctl --addr 127.0.0.1:12345 --tls-dir .local/cluster/pki/operator zones put zones.yaml
//	sledctl --addr 127.0.0.1:12345 --tls-dir .local/cluster/pki/operator inventory [--output json]
//	sledctl fault vmm hang-stop (VMM_ID | --instance INSTANCE_ID)
//	sledctl fault vmm forget (VMM_ID | --instance INSTANCE_ID | --all)
//	sledctl fault vmm fail-ensure-state [VMM_ID | --instance INSTANCE_ID] [--count N] [--code CODE] [--message M]
//	sledctl fault vmm clear
//	sledctl fault zone (fail-start | fail-shutdown | hang-shutdown | release-shutdown) [ZONE_ID]
//	sledctl fault zone latency DURATION
//	sledctl fault zone clear
//	sledctl fault rpc black-hole (on | off)
//	sledctl fault rpc latency DURATION
//	sledctl fault rpc show [--output json]
//	sledctl fault clear
//	sledctl hypervisor mode (auto | explicit) [--transition-delay DURATION]
//	sledctl vmm step [VMM_ID] [--drain]
//	sledctl reconciler poke
//
// It speaks to the sled as the operator, over mutual TLS with the
// operator's certificate (`nexus rack-certs` writes it into
// <dir>/operator); SLEDCTL_TLS_DIR stands for --tls-dir. Each call gives up
// after --timeout, so that a black-holed sled shows as one that does not
// answer. The fault commands need a sled-agent with fault_injection on
// (the local cluster, docker-compose and the test harness).
package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRoot(os.Stdout).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sledctl:", err)
		os.Exit(1)
	}
}

// target is the sled-agent sledctl talks to, as whom, and how long it
// waits for an answer.
type target struct {
	addr    string
	tlsDir  string
	timeout time.Duration
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
	root.PersistentFlags().DurationVar(&sled.timeout, "timeout", 30*time.Second, "how long to wait for the sled-agent's answer")
	root.AddCommand(zonesCommand(&sled), inventoryCommand(&sled), faultCommand(&sled),
		hypervisorCommand(&sled), vmmCommand(&sled), reconcilerCommand(&sled))
	return root
}
