package datastore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/testutil"
)

// F9: every call of a gatherer is answered once, with its own answer,
// whatever mix of lone calls that stall past loneStall, shared statements
// that fail or skip, and callers that give up; and afterwards nothing is
// in flight, queued or being made alone.
func TestF9_AGathererAnswersEveryCallOnceAndFreesItsSlot(t *testing.T) {
	ids := make([]uuid.UUID, 6)
	for i := range ids {
		ids[i] = uuid.New()
	}
	type req struct {
		id uuid.UUID
		n  int
	}
	var made sync.Map // n -> times made (together or alone)
	count := func(n int) {
		v, _ := made.LoadOrStore(n, new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
	}
	sleep := func(ctx context.Context, max time.Duration) error {
		d := time.Duration(rand.Int64N(int64(max)))
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	g := newGatherer(zap.NewNop(), func(r req) uuid.UUID { return r.id },
		func(ctx context.Context, rs []req) ([]int, error) {
			seen := map[uuid.UUID]bool{}
			for _, r := range rs {
				if seen[r.id] {
					t.Errorf("two calls for instance %s share a statement", r.id)
				}
				seen[r.id] = true
			}
			if err := sleep(ctx, 3*time.Millisecond); err != nil {
				return nil, err
			}
			if rand.IntN(10) == 0 {
				return nil, errors.New("injected")
			}
			out := make([]int, len(rs))
			for i, r := range rs {
				if rand.IntN(4) == 0 {
					out[i] = -1 // skipped
					continue
				}
				count(r.n)
				out[i] = r.n
			}
			return out, nil
		},
		func(v int) bool { return v >= 0 },
		func(ctx context.Context, r req) (int, error) {
			if err := sleep(ctx, 40*time.Millisecond); err != nil {
				return 0, err
			}
			count(r.n)
			return r.n, nil
		})
	var wg sync.WaitGroup
	const calls = 2000
	var answered atomic.Int32
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(60))*time.Millisecond)
			defer cancel()
			v, err := g.do(ctx, req{id: ids[rand.IntN(len(ids))], n: i})
			if err == nil && v != i {
				t.Errorf("call %d answered %d", i, v)
			}
			answered.Add(1)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%d of %d calls answered after 30 s", answered.Load(), calls)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.inFlight != 0 || len(g.queue) != 0 || len(g.alones) != 0 {
			return fmt.Errorf("after every call returned: %d in flight, %d queued, %d made alone", g.inFlight, len(g.queue), len(g.alones))
		}
		return nil
	})
	made.Range(func(k, v any) bool {
		if n := v.(*atomic.Int32).Load(); n > 1 {
			t.Errorf("call %v made %d times", k, n)
		}
		return true
	})
}
