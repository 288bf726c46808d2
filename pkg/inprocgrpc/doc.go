// Package inprocgrpc calls a gRPC service's unary handlers in the same
// process, through the server's interceptors but without a transport.
//
// Nexus's REST gateway is grpc-gateway in front of NexusExternal. Over a
// loopback connection every REST request also paid for an HTTP/2 client
// and server, and for encoding and decoding its messages twice; in
// process, it costs a copy of each message. The handlers see what they
// would see across a transport: the interceptor chain (authentication,
// metrics, logging), incoming metadata, the caller's deadline, and headers
// set with grpc.SetHeader reach the caller's grpc.Header call option.
package inprocgrpc
