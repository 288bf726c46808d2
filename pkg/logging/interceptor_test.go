package logging_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/pkg/logging"
)

func call(t *testing.T, handler grpc.UnaryHandler) (*observer.ObservedLogs, error) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	intercept := logging.UnaryServerInterceptor(zap.New(core), "x-request-id")
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-request-id", "req-1"))
	_, err := intercept(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/svc/Method"}, handler)
	return logs, err
}

// SPEC 7: a handler that panics is answered Internal with the request id,
// and the panic is logged with its stack; the server goes on.
func TestSPEC7_AHandlerPanicIsRecoveredAndLogged(t *testing.T) {
	logs, err := call(t, func(context.Context, any) (any, error) { panic("the secret is swordfish") })
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "req-1") || strings.Contains(err.Error(), "swordfish") {
		t.Fatalf("a panicking handler answered %v; want Internal naming the request, not the panic", err)
	}
	if logs.FilterMessage("rpc handler panicked").Len() != 1 {
		t.Fatalf("the panic was not logged: %v", logs.All())
	}
}

// SPEC 7: an internal error's text stays in the log; other errors reach
// the client as they are.
func TestSPEC7_InternalErrorTextNeverReachesTheClient(t *testing.T) {
	for _, internal := range []error{errors.New("pq: relation secret_table"), status.Error(codes.Internal, "pq: relation secret_table")} {
		logs, err := call(t, func(context.Context, any) (any, error) { return nil, internal })
		if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "secret_table") {
			t.Fatalf("an internal error reached the client as %v", err)
		}
		if logs.FilterField(zap.Error(internal)).Len() != 1 {
			t.Fatalf("the internal error was not logged: %v", logs.All())
		}
	}
	refusal := status.Error(codes.NotFound, "no such project p")
	if _, err := call(t, func(context.Context, any) (any, error) { return nil, refusal }); err.Error() != refusal.Error() {
		t.Fatalf("a NotFound reached the client as %v", err)
	}
}

// A handler that returns its call's context error reports the deadline or
// the cancellation, not an internal error: callers tell an unreachable
// peer by it (TestF7 got 500 instead of 503 for a black-holed sled).
func TestSPEC7_AContextErrorIsNoInternalError(t *testing.T) {
	for want, cause := range map[codes.Code]error{codes.DeadlineExceeded: context.DeadlineExceeded, codes.Canceled: context.Canceled} {
		if _, err := call(t, func(context.Context, any) (any, error) { return nil, fmt.Errorf("waiting: %w", cause) }); status.Code(err) != want {
			t.Errorf("a handler returning %v answered %v; want %s", cause, err, want)
		}
	}
}
