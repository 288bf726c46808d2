package racksetup

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/wire"
)

// healthServer serves gRPC health over mutual TLS as the rack member id.
func healthServer(t *testing.T, ca *rackpkitest.CA, id rackpki.Identity) (string, *health.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := grpcconn.ServerCredentials(ca.Trust(id))
	if err != nil {
		t.Fatal(err)
	}
	srv, hs := grpc.NewServer(creds), health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), hs
}

// A healthy process at a replica's address is not the replica unless it
// is that one: a replica left from another rack answering there must not
// pass for it. Its certificate says who it is (S2), and so does its health
// service.
func TestZ11_ReplicaReadinessAsksForTheReplicaByID(t *testing.T) {
	ca := rackpkitest.For(t)
	replica := model.NexusZone{ID: uuid.New()}
	other := uuid.New()
	addr, hs := healthServer(t, ca, rackpki.Identity{Kind: rackpki.Nexus, ID: other.String()})
	hs.SetServingStatus(wire.ReplicaHealthService(other), healthpb.HealthCheckResponse_SERVING)
	replica.InternalAddress = addr
	err := waitServing(context.Background(), ca.Operator(), replica, time.Now().Add(300*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "not nexus/"+replica.ID.String()) {
		t.Fatalf("another replica's process: %v, want an error saying it is not the replica", err)
	}

	replica.InternalAddress, hs = healthServer(t, ca, rackpki.Identity{Kind: rackpki.Nexus, ID: replica.ID.String()})
	hs.SetServingStatus(wire.ReplicaHealthService(replica.ID), healthpb.HealthCheckResponse_SERVING)
	if err := waitServing(context.Background(), ca.Operator(), replica, time.Now().Add(5*time.Second)); err != nil {
		t.Fatalf("the replica itself: %v", err)
	}
}
