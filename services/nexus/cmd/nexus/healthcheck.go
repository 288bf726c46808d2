package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// healthcheckCommand asks a replica's probe endpoint, for a container's
// healthcheck: the images carry no HTTP client, and this binary is in both.
func healthcheckCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Ask a nexus replica's probe (GET /readyz or /healthz on its metrics listener); exit 0 only on 200",
		Args:  cobra.NoArgs,
	}
	var (
		target  string
		timeout time.Duration
	)
	cmd.Flags().StringVar(&target, "url", "http://127.0.0.1:12223/readyz", "the probe's URL: /readyz (ready for work) or /healthz (alive)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "bound on the answer")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkProbeURL(target); err != nil {
			return err
		}
		if timeout <= 0 {
			return errors.New("--timeout: must be positive")
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
		defer cancel()
		return probe(ctx, target, cmd.OutOrStdout())
	}
	return cmd
}

func checkProbeURL(target string) error {
	u, err := url.Parse(target)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url: %q is not an http:// or https:// URL with a host", target)
	}
	return nil
}

// probe GETs target and copies its body (the checks, for `docker
// inspect`) to out; anything but 200 is an error.
func probe(ctx context.Context, target string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(out, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // the status decides
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", target, resp.Status)
	}
	return nil
}
