package inprocgrpc

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Channel is a grpc.ClientConnInterface whose calls run the handlers
// registered on it, and a grpc.ServiceRegistrar to register them with.
// Only unary methods are served.
type Channel struct {
	interceptor grpc.UnaryServerInterceptor
	methods     map[string]registered
}

type registered struct {
	impl    any
	handler grpc.MethodHandler
}

var (
	_ grpc.ClientConnInterface = (*Channel)(nil)
	_ grpc.ServiceRegistrar    = (*Channel)(nil)
)

// New returns a channel whose calls go through interceptors, first to
// last, as grpc.ChainUnaryInterceptor orders them on a server.
func New(interceptors ...grpc.UnaryServerInterceptor) *Channel {
	return &Channel{interceptor: chain(interceptors), methods: map[string]registered{}}
}

// RegisterService implements grpc.ServiceRegistrar. Register every service
// before the first call.
func (c *Channel) RegisterService(desc *grpc.ServiceDesc, impl any) {
	for _, m := range desc.Methods {
		c.methods["/"+desc.ServiceName+"/"+m.MethodName] = registered{impl: impl, handler: m.Handler}
	}
}

// Invoke implements grpc.ClientConnInterface.
func (c *Channel) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	m, ok := c.methods[method]
	if !ok {
		return status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	in, inOK := args.(proto.Message)
	out, outOK := reply.(proto.Message)
	if !inOK || !outOK {
		return status.Errorf(codes.Internal, "%s: messages must be protobuf messages, got %T and %T", method, args, reply)
	}
	stream := &transportStream{method: method}
	md, _ := metadata.FromOutgoingContext(ctx)
	// The handler's own outgoing calls must not carry the caller's
	// metadata (its credentials, say), as they would not across a
	// transport.
	serverCtx := metadata.NewOutgoingContext(ctx, nil)
	serverCtx = metadata.NewIncomingContext(serverCtx, md.Copy())
	serverCtx = grpc.NewContextWithServerTransportStream(serverCtx, stream)
	decode := func(dst any) error {
		msg, ok := dst.(proto.Message)
		if !ok {
			return fmt.Errorf("%s: request %T is not a protobuf message", method, dst)
		}
		// A copy, so that neither side sees the other change it.
		proto.Merge(msg, in)
		return nil
	}
	resp, err := m.handler(m.impl, serverCtx, decode, c.interceptor)
	stream.deliver(opts)
	if err != nil {
		if _, isStatus := status.FromError(err); isStatus {
			return err
		}
		// What a gRPC server makes of any other error.
		return status.FromContextError(err).Err()
	}
	msg, ok := resp.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "%s: response %T is not a protobuf message", method, resp)
	}
	proto.Reset(out)
	proto.Merge(out, msg)
	return nil
}

// NewStream implements grpc.ClientConnInterface: streams are not served.
func (c *Channel) NewStream(_ context.Context, _ *grpc.StreamDesc, method string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Errorf(codes.Unimplemented, "%s: streaming methods are not served in process", method)
}

// chain runs interceptors first to last around a handler.
func chain(interceptors []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	switch len(interceptors) {
	case 0:
		return nil
	case 1:
		return interceptors[0]
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return interceptors[0](ctx, req, info, then(interceptors[1:], info, handler))
	}
}

func then(rest []grpc.UnaryServerInterceptor, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) grpc.UnaryHandler {
	if len(rest) == 0 {
		return handler
	}
	return func(ctx context.Context, req any) (any, error) {
		return rest[0](ctx, req, info, then(rest[1:], info, handler))
	}
}

// transportStream collects the headers and trailers a handler sets, for
// the caller's grpc.Header and grpc.Trailer call options.
type transportStream struct {
	method string

	mu       sync.Mutex
	header   metadata.MD
	trailer  metadata.MD
	sentHead bool
}

var _ grpc.ServerTransportStream = (*transportStream)(nil)

func (s *transportStream) Method() string { return s.method }

func (s *transportStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sentHead {
		return status.Error(codes.Internal, "headers already sent")
	}
	s.header = metadata.Join(s.header, md)
	return nil
}

func (s *transportStream) SendHeader(md metadata.MD) error {
	if err := s.SetHeader(md); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sentHead = true
	return nil
}

func (s *transportStream) SetTrailer(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trailer = metadata.Join(s.trailer, md)
	return nil
}

func (s *transportStream) deliver(opts []grpc.CallOption) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = s.header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = s.trailer
		}
	}
}
