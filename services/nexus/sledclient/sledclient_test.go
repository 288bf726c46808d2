package sledclient

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/connectivity"

	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// countingResolver lists sleds at a dead address and counts its reads; a
// sled is listed once registered.
type countingResolver struct {
	mu         sync.Mutex
	registered map[uuid.UUID]string
	reads      atomic.Int32
}

func (r *countingResolver) register(sled uuid.UUID, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.registered[sled] = addr
}

func (r *countingResolver) SledAddresses(context.Context) (map[uuid.UUID]string, error) {
	r.reads.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.registered), nil
}

// A background pass calls every sled, and a force-terminate each of its
// VMMs' sleds: the sleds' addresses are read from the database once per
// addressTTL, in one read, not once per sled or call.
func TestOneReadOfTheSledsAddressesServesEveryCallWithinItsTTL(t *testing.T) {
	r := &countingResolver{registered: map[uuid.UUID]string{}}
	sleds := make([]uuid.UUID, 50)
	for i := range sleds {
		sleds[i] = uuid.New()
		r.register(sleds[i], "127.0.0.1:1")
	}
	p := NewPool(r, rackpkitest.For(t).Trust(rackpki.Identity{Kind: rackpki.Nexus, ID: "n"}))
	defer p.Close()
	var wg sync.WaitGroup
	for range 5 {
		for _, sled := range sleds {
			wg.Go(func() {
				if _, err := p.client(context.Background(), sled); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if got := r.reads.Load(); got != 1 {
		t.Fatalf("the addresses were read %d times for 250 calls to 50 sleds within their TTL, want 1", got)
	}

	// Calls naming sleds that are not registered share one read, made at
	// most missReread after the last, and are then refused.
	var refused sync.WaitGroup
	for range 20 {
		refused.Go(func() {
			if _, err := p.client(context.Background(), uuid.New()); !errors.Is(err, model.ErrNotFound) {
				t.Errorf("a sled not registered: %v, want not found", err)
			}
		})
	}
	refused.Wait()
	if got := r.reads.Load(); got != 2 {
		t.Fatalf("20 calls naming sleds not registered cost %d reads, want 1", got-1)
	}
}

// A sled that registers just after the pool read the addresses (as nexus
// starts, while its sleds register and it connects to the ones it knows)
// is found by a call made right after: the pool does not refuse it from a
// read older than the call. Before, the start saga of such a sled failed
// "sled … is not registered" (TestX4_X5_AnExpungedReplicas…, in CI).
func TestV8_ASledRegisteredJustAfterTheAddressesWereReadIsFound(t *testing.T) {
	r := &countingResolver{registered: map[uuid.UUID]string{}}
	known := uuid.New()
	r.register(known, "127.0.0.1:1")
	p := NewPool(r, rackpkitest.For(t).Trust(rackpki.Identity{Kind: rackpki.Nexus, ID: "n"}))
	defer p.Close()
	if _, err := p.client(context.Background(), known); err != nil {
		t.Fatal(err)
	}
	late := uuid.New()
	r.register(late, "127.0.0.1:2")
	if _, err := p.client(context.Background(), late); err != nil {
		t.Fatalf("a sled registered after the last read of the addresses: %v, want it found", err)
	}
}

// fixedResolver lists sleds at fixed addresses.
type fixedResolver map[uuid.UUID]string

func (r fixedResolver) SledAddresses(context.Context) (map[uuid.UUID]string, error) { return r, nil }

// S2: nexus verifies that whoever answers at a sled's address is that
// sled: another sled-agent there, with a valid certificate of the rack, is
// refused in the handshake, which reads as the sled unreachable, never as
// its answer.
func TestS2_ASledAnsweringForAnotherIsNotBelieved(t *testing.T) {
	impostor := sledagenttest.Start(t)
	called := uuid.New()
	addr := impostor.Server.Addr()
	p := NewPool(fixedResolver{called: addr, uuid.MustParse(impostor.Config.SledID): addr}, rackpkitest.For(t).Trust(rackpki.Identity{Kind: rackpki.Nexus, ID: "n"}))
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := p.Inventory(ctx, called)
	if !errors.Is(err, model.ErrSledUnreachable) || !strings.Contains(err.Error(), "not sled/"+called.String()) {
		t.Fatalf("another sled answering for sled %s: %v, want it unreachable, naming who was expected", called, err)
	}
	if _, err := p.Inventory(ctx, uuid.MustParse(impostor.Config.SledID)); err != nil {
		t.Fatalf("the sled itself: %v", err)
	}
}

// SPEC 6: a restarted nexus connects to every sled before its first passes
// need them, so that a pass over 1,000 sleds does not pay 1,000 handshakes.
// A sled that is gone, or one whose address answers for another sled, is
// not waited for beyond its bound and is not counted ready (S2 stands).
func TestSPEC6_WarmConnectsToEverySledAheadOfThePassesAndWaitsForNoneThatIsGone(t *testing.T) {
	resolver := fixedResolver{}
	var live []uuid.UUID
	for range 3 {
		a := sledagenttest.Start(t)
		id := uuid.MustParse(a.Config.SledID)
		resolver[id] = a.Server.Addr()
		live = append(live, id)
	}
	resolver[uuid.New()] = resolver[live[0]] // answered by another sled
	resolver[uuid.New()] = "127.0.0.1:1"     // nobody listens
	p := NewPool(resolver, rackpkitest.For(t).Trust(rackpki.Identity{Kind: rackpki.Nexus, ID: "n"}))
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*warmTimeout)
	defer cancel()
	ready, err := p.Warm(ctx)
	if err != nil || ready != len(live) {
		t.Fatalf("Warm: %d ready, %v; want the %d live sleds ready", ready, err, len(live))
	}
	for _, id := range live {
		p.mu.Lock()
		c, ok := p.conns[id]
		p.mu.Unlock()
		if !ok || c.cc.GetState() != connectivity.Ready {
			t.Errorf("sled %s: no ready connection after Warm (%v)", id, ok)
		}
	}

	// Once the pool is closed (nexus shutting down), a warm-up still under
	// way opens nothing that would outlive it.
	p.Close()
	if ready, _ := p.Warm(ctx); ready != 0 {
		t.Fatalf("Warm after Close: %d ready, want 0", ready)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.conns) != 0 {
		t.Fatalf("Warm after Close left %d connections open", len(p.conns))
	}
}
