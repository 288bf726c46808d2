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

	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/wire"
)

// A healthy process at a replica's address is not the replica unless it
// says it is that one: a replica left from another rack answering there
// must not pass for it.
func TestZ11_ReplicaReadinessAsksForTheReplicaByID(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, hs := grpc.NewServer(), health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	defer srv.Stop()
	replica := model.NexusZone{ID: uuid.New(), InternalAddress: lis.Addr().String()}
	hs.SetServingStatus(wire.ReplicaHealthService(uuid.New()), healthpb.HealthCheckResponse_SERVING)

	err = waitServing(context.Background(), replica, time.Now().Add(300*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "another process answers") {
		t.Fatalf("another replica's process: %v, want an error saying another process answers", err)
	}
	hs.SetServingStatus(wire.ReplicaHealthService(replica.ID), healthpb.HealthCheckResponse_SERVING)
	if err := waitServing(context.Background(), replica, time.Now().Add(5*time.Second)); err != nil {
		t.Fatalf("the replica itself: %v", err)
	}
}
