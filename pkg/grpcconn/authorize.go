package grpcconn

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/pkg/rackpki"
)

// ServerCredentials makes a server of the rack: every client must complete
// a mutual TLS handshake with a certificate of the rack CA (S2), so a
// plaintext client or one of another CA never reaches a handler.
func ServerCredentials(trust rackpki.Trust) (grpc.ServerOption, error) {
	if trust.Roots == nil || len(trust.Own.Certificate) == 0 {
		return nil, ErrNoTrust
	}
	return grpc.Creds(credentials.NewTLS(trust.ServerConfig())), nil
}

// Caller is the rack identity of the client of ctx's call, from the
// certificate its TLS handshake verified.
func Caller(ctx context.Context) (rackpki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return rackpki.Identity{}, rackpki.ErrNoIdentity
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return rackpki.Identity{}, rackpki.ErrNoIdentity
	}
	return rackpki.PeerIdentity(info.State)
}

// Policy says which kinds of rack member may call each service, by its
// full name (omicron.sledagent.v1.SledAgent); a service it does not name
// is refused to everyone.
type Policy map[string][]rackpki.Kind

// Authorize admits a call only from a member of a kind its service
// allows (S4): anyone else gets PERMISSION_DENIED, and no handler runs.
func Authorize(policy Policy) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := policy.admit(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// AuthorizeStream is Authorize for streaming calls (gRPC health's Watch,
// say): without it a stream would reach its handler whatever the policy.
func AuthorizeStream(policy Policy) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := policy.admit(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func (p Policy) admit(ctx context.Context, method string) error {
	caller, err := Caller(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, "the caller presented no rack certificate")
	}
	service, _, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	for _, k := range p[service] {
		if caller.Kind == k {
			return nil
		}
	}
	return status.Errorf(codes.PermissionDenied, "%s may not call %s", caller, service)
}
