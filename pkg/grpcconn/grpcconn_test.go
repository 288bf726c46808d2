package grpcconn

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
)

var peerID = rackpki.Identity{Kind: rackpki.Sled, ID: "silent"}

func dial(t *testing.T, addr string, callTimeout time.Duration) *grpc.ClientConn {
	t.Helper()
	cc, err := Dial(addr, rackpkitest.For(t).Operator(), peerID, callTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// A server of the rack that accepts every call and never answers.
func silentServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := ServerCredentials(rackpkitest.For(t).Trust(peerID))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(creds, grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		<-stream.Context().Done()
		return stream.Context().Err()
	}))
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestACallWithoutADeadlineGetsTheDefaultOne(t *testing.T) {
	cc := dial(t, silentServer(t), 200*time.Millisecond)
	_, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a call to a silent peer: %v, want DeadlineExceeded", err)
	}
}

func TestACallersOwnDeadlineIsKept(t *testing.T) {
	cc := dial(t, silentServer(t), time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a call with its own deadline: %v, want DeadlineExceeded", err)
	}
}

// S4: a policy holds for streaming calls too: gRPC health's Watch is
// refused to a kind the policy does not admit, as Check is.
func TestS4_APolicyRefusesStreamingCallsToo(t *testing.T) {
	ca := rackpkitest.For(t)
	creds, err := ServerCredentials(ca.Trust(peerID))
	if err != nil {
		t.Fatal(err)
	}
	policy := Policy{healthpb.Health_ServiceDesc.ServiceName: {rackpki.Nexus}}
	srv := grpc.NewServer(creds, grpc.ChainUnaryInterceptor(Authorize(policy)), grpc.ChainStreamInterceptor(AuthorizeStream(policy)))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	cc := dial(t, lis.Addr().String(), 5*time.Second) // as the operator
	client := healthpb.NewHealthClient(cc)
	if _, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Check as the operator: %v, want PERMISSION_DENIED", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Watch as the operator: %v, want PERMISSION_DENIED", err)
	}
}
