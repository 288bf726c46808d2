package sledclient

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
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
