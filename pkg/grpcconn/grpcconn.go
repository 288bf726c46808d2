package grpcconn

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/rackplane/rackplane/pkg/rackpki"
)

// reconnect caps gRPC's reconnect backoff at 2 s instead of its default
// 120 s: a peer that comes back (a restarted nexus, a healed partition)
// is talked to again within seconds, not minutes, while the callers'
// own retries keep their own policies.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	MinConnectTimeout: 2 * time.Second,
}

// Dial opens a lazily connecting client connection to addr, over mutual
// TLS as trust's member, to a server whose certificate names want (S2; a
// want without an id is any member of its kind). A call whose context has
// no deadline gets callTimeout, so that a peer that accepts calls and
// never answers cannot hold a caller for ever; zero means no default
// deadline.
func Dial(addr string, trust rackpki.Trust, want rackpki.Identity, callTimeout time.Duration) (*grpc.ClientConn, error) {
	creds, err := clientCredentials(trust, want)
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{creds, grpc.WithConnectParams(reconnect)}
	if callTimeout > 0 {
		opts = append(opts, grpc.WithChainUnaryInterceptor(defaultDeadline(callTimeout)))
	}
	return grpc.NewClient(addr, opts...)
}

// ErrNoTrust means a member was asked to speak inside the rack without
// its certificate: there is no plaintext inside the rack.
var ErrNoTrust = errors.New("no rack certificate: calls inside the rack are mutual TLS only")

func clientCredentials(trust rackpki.Trust, want rackpki.Identity) (grpc.DialOption, error) {
	if trust.Roots == nil || len(trust.Own.Certificate) == 0 {
		return nil, ErrNoTrust
	}
	if want.Kind == "" {
		return nil, errors.New("grpcconn: no kind of peer to expect: a rack connection always knows whom it reaches")
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(trust.ClientConfig(&want))), nil
}

// DialAny is Dial to several equivalent peers (nexus replicas): calls go
// round robin over those that are up, so that one peer down or hung costs
// a caller one attempt, not all of them.
func DialAny(addrs []string, trust rackpki.Trust, want rackpki.Identity, callTimeout time.Duration) (*grpc.ClientConn, error) {
	if len(addrs) == 1 {
		return Dial(addrs[0], trust, want, callTimeout)
	}
	creds, err := clientCredentials(trust, want)
	if err != nil {
		return nil, err
	}
	peers := manual.NewBuilderWithScheme("rackplane-peers")
	state := resolver.State{}
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	peers.InitialState(state)
	opts := []grpc.DialOption{creds, grpc.WithConnectParams(reconnect),
		grpc.WithResolvers(peers), grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`)}
	if callTimeout > 0 {
		opts = append(opts, grpc.WithChainUnaryInterceptor(defaultDeadline(callTimeout)))
	}
	return grpc.NewClient(peers.Scheme()+":///peers", opts...)
}

func defaultDeadline(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
