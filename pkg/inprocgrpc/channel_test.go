package inprocgrpc_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/pkg/inprocgrpc"
)

// health answers Check with what the test tells it to, and remembers what
// it saw.
type health struct {
	healthpb.UnimplementedHealthServer
	answer   func(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error)
	incoming metadata.MD
	outgoing metadata.MD
}

func (h *health) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.incoming, _ = metadata.FromIncomingContext(ctx)
	h.outgoing, _ = metadata.FromOutgoingContext(ctx)
	return h.answer(ctx, req)
}

func serving(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func channel(h *health, interceptors ...grpc.UnaryServerInterceptor) healthpb.HealthClient {
	c := inprocgrpc.New(interceptors...)
	healthpb.RegisterHealthServer(c, h)
	return healthpb.NewHealthClient(c)
}

// N10, N11: a REST request served in process goes through the same
// interceptors, in the same order, as a gRPC one, and they see its
// metadata (the bearer token, the request id) as incoming metadata.
func TestN10_InProcessCallsGoThroughTheInterceptorsInOrderWithTheCallersMetadata(t *testing.T) {
	var order []string
	record := func(name string) grpc.UnaryServerInterceptor {
		return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			order = append(order, name+" "+info.FullMethod+" "+strings.Join(md.Get("authorization"), ","))
			return handler(ctx, req)
		}
	}
	h := &health{answer: serving}
	client := channel(h, record("first"), record("second"), record("third"))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer t0ken")
	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "x"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("(%v, %v)", resp, err)
	}
	want := []string{
		"first /grpc.health.v1.Health/Check Bearer t0ken",
		"second /grpc.health.v1.Health/Check Bearer t0ken",
		"third /grpc.health.v1.Health/Check Bearer t0ken",
	}
	if strings.Join(order, "\n") != strings.Join(want, "\n") {
		t.Errorf("interceptors ran as\n%s\nwant\n%s", strings.Join(order, "\n"), strings.Join(want, "\n"))
	}
	if got := h.incoming.Get("authorization"); len(got) != 1 || got[0] != "Bearer t0ken" {
		t.Errorf("the handler saw authorization %q", got)
	}
	// The caller's credentials must not ride along on the handler's own
	// calls (to sled-agents, say).
	if len(h.outgoing) != 0 {
		t.Errorf("the handler's outgoing metadata is %v, want none", h.outgoing)
	}
}

// N9: a handler's headers (the HTTP status nexus chooses for a create)
// reach the gateway's grpc.Header option; trailers reach grpc.Trailer.
func TestN9_HeadersAHandlerSetsReachTheCaller(t *testing.T) {
	h := &health{answer: func(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
		if err := grpc.SetHeader(ctx, metadata.Pairs("x-http-status", "201")); err != nil {
			return nil, err
		}
		if err := grpc.SetTrailer(ctx, metadata.Pairs("x-done", "yes")); err != nil {
			return nil, err
		}
		return serving(ctx, req)
	}}
	var header, trailer metadata.MD
	if _, err := channel(h).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Header(&header), grpc.Trailer(&trailer)); err != nil {
		t.Fatal(err)
	}
	if got := header.Get("x-http-status"); len(got) != 1 || got[0] != "201" {
		t.Errorf("header x-http-status %q, want 201", got)
	}
	if got := trailer.Get("x-done"); len(got) != 1 || got[0] != "yes" {
		t.Errorf("trailer x-done %q, want yes", got)
	}
}

// N9: errors reach the caller as a gRPC server would send them: a status
// as it is, a context's end as Canceled or DeadlineExceeded, anything else
// as Unknown; an unknown method is Unimplemented.
func TestN9_ErrorsReachTheCallerAsAServerSendsThem(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"status", status.Error(codes.NotFound, "no such instance"), codes.NotFound},
		{"canceled", context.Canceled, codes.Canceled},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded},
		{"plain", errors.New("boom"), codes.Unknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &health{answer: func(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
				return nil, tc.err
			}}
			_, err := channel(h).Check(context.Background(), &healthpb.HealthCheckRequest{})
			if status.Code(err) != tc.want {
				t.Errorf("%v: code %s, want %s", err, status.Code(err), tc.want)
			}
		})
	}
	err := inprocgrpc.New().Invoke(context.Background(), "/no.Such/Method", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("an unregistered method: %v, want Unimplemented", err)
	}
}

// The handler works on its own copy of the request, and the caller gets
// its own copy of the response, as across a transport.
func TestMessagesAreCopiedBothWays(t *testing.T) {
	shared := &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}
	h := &health{answer: func(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
		req.Service = "changed by the handler"
		return shared, nil
	}}
	req := &healthpb.HealthCheckRequest{Service: "mine"}
	resp, err := channel(h).Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if req.Service != "mine" {
		t.Errorf("the caller's request became %q", req.Service)
	}
	resp.Status = healthpb.HealthCheckResponse_NOT_SERVING
	if shared.Status != healthpb.HealthCheckResponse_SERVING {
		t.Error("the caller's response is the handler's own message")
	}
}
