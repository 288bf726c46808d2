package sledagenttest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/config"
)

// NexusReceiver is a small, real NexusInternal gRPC server on loopback that
// records what sled-agents send it. It can be stopped and started again on
// the same address (nexus down, then back) and told to fail calls.
type NexusReceiver struct {
	t    testutil.TB
	addr string

	mu             sync.Mutex
	server         *grpc.Server
	registrations  []*nexusv1.RegisterSledRequest
	heartbeats     int
	updates        []*nexusv1.VmmStateUpdateRequest
	updateAttempts int
	failUpdates    []codes.Code // answers for the next update calls, in order
	forgetSleds    bool
	heartbeatGate  chan struct{} // while set, heartbeats are counted but not answered

	failUpdatesOf map[string]codes.Code            // answer for every update call of a VMM
	attempts      []*nexusv1.VmmStateUpdateRequest // every update call, refused ones included
}

type nexusService struct {
	nexusv1.UnimplementedNexusInternalServer
	n *NexusReceiver
}

// StartNexus starts a receiver and stops it when the test ends.
func StartNexus(t testutil.TB) *NexusReceiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &NexusReceiver{t: t, addr: lis.Addr().String()}
	n.serve(lis)
	t.Cleanup(n.Stop)
	return n
}

// Addr is the receiver's address, stable across Stop and Start.
func (n *NexusReceiver) Addr() string { return n.addr }

func (n *NexusReceiver) serve(lis net.Listener) {
	creds, err := grpcconn.ServerCredentials(rackpkitest.For(n.t).Trust(rackpki.Identity{Kind: rackpki.Nexus, ID: "receiver"}))
	if err != nil {
		n.t.Fatal(err)
	}
	srv := grpc.NewServer(creds)
	nexusv1.RegisterNexusInternalServer(srv, &nexusService{n: n})
	n.mu.Lock()
	n.server = srv
	n.mu.Unlock()
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
}

// Stop takes the receiver down: calls fail as with an unreachable nexus.
func (n *NexusReceiver) Stop() {
	n.mu.Lock()
	srv := n.server
	n.server = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// Start brings a stopped receiver back on the same address.
func (n *NexusReceiver) Start() {
	n.t.Helper()
	var lis net.Listener
	testutil.WaitFor(n.t, 5*time.Second, func() (err error) {
		lis, err = net.Listen("tcp", n.addr)
		return err
	})
	n.serve(lis)
}

// FailUpdates makes the next VmmStateUpdate calls fail with these codes, one
// code per call, in order.
func (n *NexusReceiver) FailUpdates(codes ...codes.Code) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.failUpdates = append(n.failUpdates, codes...)
}

// FailUpdatesOf makes every VmmStateUpdate call about vmmID fail with code,
// until it is called again with codes.OK. It takes precedence over
// FailUpdates and consumes none of its codes.
func (n *NexusReceiver) FailUpdatesOf(vmmID string, code codes.Code) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failUpdatesOf == nil {
		n.failUpdatesOf = map[string]codes.Code{}
	}
	if code == codes.OK {
		delete(n.failUpdatesOf, vmmID)
		return
	}
	n.failUpdatesOf[vmmID] = code
}

// AttemptsOf returns every VmmStateUpdate call about vmmID, refused ones
// included, in the order they arrived.
func (n *NexusReceiver) AttemptsOf(vmmID string) []*nexusv1.VmmStateUpdateRequest {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*nexusv1.VmmStateUpdateRequest
	for _, u := range n.attempts {
		if u.GetVmmId() == vmmID {
			out = append(out, u)
		}
	}
	return out
}

// ForgetSleds makes heartbeats answer NOT_FOUND, as a nexus that lost its
// sled records would, until registration succeeds again.
func (n *NexusReceiver) ForgetSleds() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.forgetSleds = true
}

func (s *nexusService) RegisterSled(_ context.Context, req *nexusv1.RegisterSledRequest) (*nexusv1.RegisterSledResponse, error) {
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	s.n.registrations = append(s.n.registrations, req)
	s.n.forgetSleds = false
	return &nexusv1.RegisterSledResponse{}, nil
}

// HoldHeartbeats makes heartbeats wait for their answer, as behind a
// database slow to write them, until release; each is counted as it
// arrives.
func (n *NexusReceiver) HoldHeartbeats() (release func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	gate := make(chan struct{})
	n.heartbeatGate = gate
	var once sync.Once
	return func() {
		once.Do(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.heartbeatGate = nil
			close(gate)
		})
	}
}

func (s *nexusService) SledHeartbeat(ctx context.Context, _ *nexusv1.SledHeartbeatRequest) (*nexusv1.SledHeartbeatResponse, error) {
	s.n.mu.Lock()
	if s.n.forgetSleds {
		s.n.mu.Unlock()
		return nil, status.Error(codes.NotFound, "no such sled")
	}
	s.n.heartbeats++
	gate := s.n.heartbeatGate
	s.n.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &nexusv1.SledHeartbeatResponse{}, nil
}

func (s *nexusService) VmmStateUpdate(_ context.Context, req *nexusv1.VmmStateUpdateRequest) (*nexusv1.VmmStateUpdateResponse, error) {
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	s.n.updateAttempts++
	s.n.attempts = append(s.n.attempts, req)
	if code, ok := s.n.failUpdatesOf[req.GetVmmId()]; ok {
		return nil, status.Errorf(code, "injected by the test receiver for VMM %s", req.GetVmmId())
	}
	if len(s.n.failUpdates) > 0 {
		code := s.n.failUpdates[0]
		s.n.failUpdates = s.n.failUpdates[1:]
		return nil, status.Errorf(code, "injected by the test receiver")
	}
	s.n.updates = append(s.n.updates, req)
	return &nexusv1.VmmStateUpdateResponse{}, nil
}

// Registrations returns every RegisterSled received.
func (n *NexusReceiver) Registrations() []*nexusv1.RegisterSledRequest {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.registrations)
}

// Heartbeats returns how many heartbeats were accepted.
func (n *NexusReceiver) Heartbeats() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.heartbeats
}

// UpdateAttempts returns how many VmmStateUpdate calls arrived, failed ones
// included.
func (n *NexusReceiver) UpdateAttempts() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.updateAttempts
}

// Updates returns the accepted updates of one VMM (all VMMs for ""), in the
// order they arrived.
func (n *NexusReceiver) Updates(vmmID string) []*nexusv1.VmmStateUpdateRequest {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*nexusv1.VmmStateUpdateRequest
	for _, u := range n.updates {
		if vmmID == "" || u.GetVmmId() == vmmID {
			out = append(out, u)
		}
	}
	return out
}

// WaitUpdate polls until an accepted update of vmmID satisfies match, and
// returns it.
func (n *NexusReceiver) WaitUpdate(vmmID string, match func(*nexusv1.VmmStateUpdateRequest) bool) *nexusv1.VmmStateUpdateRequest {
	n.t.Helper()
	var found *nexusv1.VmmStateUpdateRequest
	testutil.WaitFor(n.t, 10*time.Second, func() error {
		for _, u := range n.Updates(vmmID) {
			if match(u) {
				found = u
				return nil
			}
		}
		return fmt.Errorf("no matching update for VMM %s among %d", vmmID, len(n.Updates(vmmID)))
	})
	return found
}

// WithNexus points an agent at a receiver, with quick retries and
// heartbeats.
func WithNexus(n *NexusReceiver) func(*config.Config) {
	return func(c *config.Config) {
		c.NexusAddress = []string{n.Addr()}
		c.HeartbeatPeriod = config.Duration(20 * time.Millisecond)
		c.PublishRetryInitial = config.Duration(5 * time.Millisecond)
		c.PublishRetryMax = config.Duration(50 * time.Millisecond)
		c.NexusCallTimeout = config.Duration(2 * time.Second)
	}
}

// Explicit makes the agent's hypervisor complete transitions only when
// stepped.
func Explicit(c *config.Config) { c.HypervisorMode = "explicit" }
