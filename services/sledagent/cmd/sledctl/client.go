package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
)

// clients are the sled-agent's services over one connection: a command
// that resolves an instance through the inventory, then injects a fault,
// makes both calls within one --timeout.
type clients struct {
	agent sledagentv1.SledAgentClient
	sim   sledagentv1.SledAgentSimClient
}

// call runs RPCs against the sled-agent at sled.addr, bounded by
// sled.timeout, and renders their error for a person.
func call(ctx context.Context, sled target, rpc func(context.Context, clients) error) error {
	if sled.tlsDir == "" {
		return errors.New("--tls-dir is required: sled-agents answer the operator's certificate only")
	}
	if sled.timeout <= 0 {
		return fmt.Errorf("--timeout: %s is not a positive duration", sled.timeout)
	}
	trust, err := rackpki.LoadDir(sled.tlsDir)
	if err != nil {
		return fmt.Errorf("--tls-dir: %w", err)
	}
	conn, err := grpcconn.Dial(sled.addr, trust, rackpki.Identity{Kind: rackpki.Sled}, 0)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, sled.timeout)
	defer cancel()
	err = rpc(ctx, clients{agent: sledagentv1.NewSledAgentClient(conn), sim: sledagentv1.NewSledAgentSimClient(conn)})
	if err != nil {
		return describe(sled, err)
	}
	return nil
}

// describe renders an API error for a person: the code, the reason and
// every field violation on its own line; a call that ran out of time and
// a sled without fault injection are said in words.
func describe(sled target, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch {
	case st.Code() == codes.DeadlineExceeded:
		return fmt.Errorf("the sled-agent at %s did not answer within %s (--timeout)", sled.addr, sled.timeout)
	case st.Code() == codes.Unimplemented && strings.Contains(st.Message(), sledagentv1.SledAgentSim_ServiceDesc.ServiceName):
		return fmt.Errorf("the sled-agent at %s injects no faults: it runs with fault_injection off", sled.addr)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s", st.Code())
	if reason := apierror.Reason(err); reason != "" {
		fmt.Fprintf(&b, " (%s)", reason)
	}
	fmt.Fprintf(&b, ": %s", st.Message())
	if violations := apierror.FieldViolations(err); len(violations) > 0 {
		b.Reset()
		fmt.Fprintf(&b, "%s: the sled refused the request:", st.Code())
		for _, v := range violations {
			fmt.Fprintf(&b, "\n  %s: %s", v.Field, v.Description)
		}
	}
	return fmt.Errorf("%s", b.String())
}

// callAndSay calls the sled, then prints the one line that says what was
// done.
func callAndSay(cmd *cobra.Command, sled target, rpc func(context.Context, clients) error, format string, args ...any) error {
	if err := call(cmd.Context(), sled, rpc); err != nil {
		return err
	}
	_, err := fmt.Fprintf(cmd.OutOrStdout(), format+"\n", args...)
	return err
}
