package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/testutil"
)

// TestN8_APassStartsNoCallOnceItsContextHasEnded: a pass over the sleds
// that is cancelled while it waits for a free slot starts no more calls.
// Found by review: it checked the context only before waiting, and started
// one more call, with the ended context, once a slot was freed.
func TestN8_APassStartsNoCallOnceItsContextHasEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	var (
		mu              sync.Mutex
		afterCancel     int
		started, waited atomic.Int32
	)
	sleds := make([]int, sledsAtOnce+8)
	for i := range sleds {
		sleds[i] = i
	}
	done := make(chan error, 1)
	go func() {
		done <- eachSled(ctx, sleds, func(int) error {
			started.Add(1)
			if ctx.Err() != nil {
				mu.Lock()
				afterCancel++
				mu.Unlock()
				return ctx.Err()
			}
			waited.Add(1)
			<-release
			return nil
		})
	}()
	// Every slot is taken; the loop waits for one.
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := started.Load(); n < sledsAtOnce {
			return fmt.Errorf("%d calls started, want %d", n, sledsAtOnce)
		}
		return nil
	})
	cancel()
	close(release)
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("eachSled: %v, want context.Canceled", err)
	}
	if afterCancel > 0 {
		t.Errorf("eachSled started %d visit(s) after its context ended (%d started in all)", afterCancel, started.Load())
	}
}
