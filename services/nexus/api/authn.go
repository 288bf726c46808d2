package api

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/authz"
)

// Authenticate is the external server's interceptor: every call carries a
// bearer token, resolved to the caller the app layer authorizes (N10).
// Health checks are exempt, so probes need no secret.
func Authenticate(n *app.Nexus) grpc.UnaryServerInterceptor {
	healthPrefix := "/" + healthpb.Health_ServiceDesc.ServiceName + "/"
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if len(info.FullMethod) >= len(healthPrefix) && info.FullMethod[:len(healthPrefix)] == healthPrefix {
			return handler(ctx, req)
		}
		var header string
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			values := md.Get("authorization")
			if len(values) > 1 {
				return nil, status.Error(codes.InvalidArgument, "more than one authorization header")
			}
			if len(values) == 1 {
				header = values[0]
			}
		}
		actor, err := n.Authenticate(ctx, header)
		if err != nil {
			return nil, toStatus(err)
		}
		return handler(authz.WithActor(ctx, actor), req)
	}
}

// CheckAuthorization is Authenticate for the REST gateway, which checks a
// request's caller before it reads its body (SPEC 7): nil, or the status
// the call itself would have failed with.
func CheckAuthorization(n *app.Nexus) func(ctx context.Context, authorization string) error {
	return func(ctx context.Context, authorization string) error {
		_, err := n.Authenticate(ctx, authorization)
		return toStatus(err)
	}
}
