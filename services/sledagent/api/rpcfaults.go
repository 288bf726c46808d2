package api

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
)

// RPCFaults are the sim's faults on the SledAgent service itself (V7): a
// black hole that accepts calls and never answers, and added latency. They
// never touch SledAgentSim, which must stay reachable to lift them, nor the
// health service.
type RPCFaults struct {
	mu        sync.Mutex
	blackHole chan struct{} // non-nil while the black hole is open; closed to lift it
	latency   time.Duration
}

// SetBlackHole opens or lifts the black hole; calls swallowed by it fail
// only when their callers give up.
func (f *RPCFaults) SetBlackHole(enabled bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case enabled && f.blackHole == nil:
		f.blackHole = make(chan struct{})
	case !enabled && f.blackHole != nil:
		close(f.blackHole)
		f.blackHole = nil
	}
}

// SetLatency delays every SledAgent call by d.
func (f *RPCFaults) SetLatency(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = d
}

// Clear lifts every RPC fault.
func (f *RPCFaults) Clear() {
	f.SetBlackHole(false)
	f.SetLatency(0)
}

var sledAgentPrefix = "/" + sledagentv1.SledAgent_ServiceDesc.ServiceName + "/"

// Interceptor applies the faults to SledAgent calls.
func (f *RPCFaults) Interceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, sledAgentPrefix) {
			return handler(ctx, req)
		}
		f.mu.Lock()
		hole, latency := f.blackHole, f.latency
		f.mu.Unlock()
		if hole != nil {
			select {
			case <-hole:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if latency > 0 {
			t := time.NewTimer(latency)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return handler(ctx, req)
	}
}
