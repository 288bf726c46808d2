package api

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/services/nexus/app"
)

// RefuseOnceExpunged answers every call UNAVAILABLE once this replica knows
// it was expunged (X3): it serves nothing from then on, and its process is
// about to exit. Callers go to another replica.
func RefuseOnceExpunged(n *app.Nexus) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if n.IsExpunged() {
			return nil, status.Errorf(codes.Unavailable,
				"nexus replica %s has been expunged: it serves nothing and is stopping; use another replica", n.ReplicaID())
		}
		return handler(ctx, req)
	}
}
