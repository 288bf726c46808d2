// Package grpcconn dials the gRPC connections the services open to each
// other (nexus to sled-agents, sled-agents to nexus), with one policy for
// how quickly a lost peer is reconnected and how long a call may take.
package grpcconn
