package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
)

// healthcheckCommand asks a sled-agent's gRPC health, for a container's
// healthcheck: the agent has no HTTP listener, and its gRPC is mutual TLS
// only (S2), which no general-purpose probe speaks.
func healthcheckCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Ask a sled-agent's gRPC health over the rack's mutual TLS; exit 0 only when it is SERVING",
		Args:  cobra.NoArgs,
	}
	var (
		addr    string
		tlsDir  string
		timeout time.Duration
	)
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:12345", "the sled-agent's gRPC address")
	cmd.Flags().StringVar(&tlsDir, "tls-dir", "", "rack certificates to ask with (ca.crt, tls.crt, tls.key): the sled's own, which also proves the agent at --addr is that sled, or an operator's")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "bound on the answer")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if tlsDir == "" {
			return errors.New("--tls-dir is required: a sled-agent answers rack members only, over mutual TLS")
		}
		if timeout <= 0 {
			return errors.New("--timeout: must be positive")
		}
		trust, err := rackpki.LoadDir(tlsDir)
		if err != nil {
			return fmt.Errorf("--tls-dir: %w", err)
		}
		// A sled asking with its own identity expects to find itself.
		want := rackpki.Identity{Kind: rackpki.Sled}
		if trust.Identity.Kind == rackpki.Sled {
			want.ID = trust.Identity.ID
		}
		conn, err := grpcconn.Dial(addr, trust, want, 0)
		if err != nil {
			return fmt.Errorf("--addr: %w", err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return fmt.Errorf("sled-agent at %s: %w", addr, err)
		}
		fmt.Fprintln(cmd.OutOrStdout(), resp.GetStatus())
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("sled-agent at %s is %s", addr, resp.GetStatus())
		}
		return nil
	}
	return cmd
}
