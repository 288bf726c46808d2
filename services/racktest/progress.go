package racktest

import (
	"context"
	"sync"
	"time"
)

// ShowProgress calls say with line(time since the call) every period
// until the returned stop is called or ctx ends: long work (thousands of
// instances created) shows it is moving. stop returns once say is no
// longer called.
func ShowProgress(ctx context.Context, period time.Duration, say func(string), line func(elapsed time.Duration) string) (stop func()) {
	began := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				say(line(time.Since(began)))
			}
		}
	})
	return sync.OnceFunc(func() { close(done); wg.Wait() })
}
