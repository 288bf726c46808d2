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
// health service. The calls the black hole holds are tracked, so tests can
// tell that a call has reached the sled and is waiting there.
type RPCFaults struct {
	mu        sync.Mutex
	blackHole chan struct{} // non-nil while the black hole is open; closed to lift it
	latency   time.Duration
	held      []*HeldCall // calls the black hole holds, in arrival order
}

// HeldCall is a SledAgent call the black hole holds.
type HeldCall struct {
	// Method is the call's full gRPC method name.
	Method string
	// VMMID is the request's vmm_id, empty when it has none.
	VMMID string
}

// RPCFaultsState is a snapshot of the RPC faults.
type RPCFaultsState struct {
	BlackHole bool
	Latency   time.Duration
	Held      []HeldCall
}

// SetBlackHole opens or lifts the black hole; calls swallowed by it fail
// only when their callers give up, and proceed when it is lifted.
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

// State returns the faults in force and the calls the black hole holds, in
// the order they arrived. A call is held from when the hole catches it until
// it leaves (the hole is lifted, or its caller gives up), so a call may
// still be listed for a moment after the hole is lifted.
func (f *RPCFaults) State() RPCFaultsState {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := RPCFaultsState{BlackHole: f.blackHole != nil, Latency: f.latency, Held: make([]HeldCall, 0, len(f.held))}
	for _, c := range f.held {
		s.Held = append(s.Held, *c)
	}
	return s
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
		var held *HeldCall
		if hole != nil {
			// Listed under the same lock that saw the hole open, so a call
			// the hole holds is never missing from State.
			held = &HeldCall{Method: info.FullMethod, VMMID: vmmIDOf(req)}
			f.held = append(f.held, held)
		}
		f.mu.Unlock()
		if hole != nil {
			var gaveUp error
			select {
			case <-hole:
			case <-ctx.Done():
				gaveUp = ctx.Err()
			}
			f.release(held)
			if gaveUp != nil {
				return nil, gaveUp
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

// release removes a call from the held calls.
func (f *RPCFaults) release(c *HeldCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, h := range f.held {
		if h == c {
			f.held = append(f.held[:i], f.held[i+1:]...)
			return
		}
	}
}

// vmmIDOf returns the request's vmm_id, if its message has one.
func vmmIDOf(req any) string {
	if r, ok := req.(interface{ GetVmmId() string }); ok {
		return r.GetVmmId()
	}
	return ""
}
