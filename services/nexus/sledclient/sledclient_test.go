package sledclient

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

type countingResolver struct{ calls atomic.Int32 }

func (r *countingResolver) SledAddress(context.Context, uuid.UUID) (string, error) {
	r.calls.Add(1)
	return "127.0.0.1:1", nil
}

// A force-terminate calls Client once per VMM: the sled's address is read
// from the database once per addressTTL, not once per call.
func TestASledsAddressIsReadOncePerTTL(t *testing.T) {
	r := &countingResolver{}
	p := NewPool(r, rackpkitest.For(t).Trust(rackpki.Identity{Kind: rackpki.Nexus, ID: "n"}))
	defer p.Close()
	sled := uuid.New()
	for i := 0; i < 5; i++ {
		if _, err := p.client(context.Background(), sled); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.calls.Load(); got != 1 {
		t.Fatalf("the address was read %d times for 5 calls within its TTL, want 1", got)
	}
}

type fixedResolver string

func (r fixedResolver) SledAddress(context.Context, uuid.UUID) (string, error) { return string(r), nil }

// S2: nexus verifies that whoever answers at a sled's address is that
// sled: another sled-agent there, with a valid certificate of the rack, is
// refused in the handshake, which reads as the sled unreachable, never as
// its answer.
func TestS2_ASledAnsweringForAnotherIsNotBelieved(t *testing.T) {
	impostor := sledagenttest.Start(t)
	p := NewPool(fixedResolver(impostor.Server.Addr()), rackpkitest.For(t).Trust(rackpki.Identity{Kind: rackpki.Nexus, ID: "n"}))
	defer p.Close()
	called := uuid.New()
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
