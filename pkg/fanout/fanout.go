// Package fanout calls a function for many items, a bounded number at a
// time: a nexus pass over 1,000 sleds, or its warm-up of their connections.
package fanout

import (
	"context"
	"errors"
	"sync"
)

// Each calls visit for every item, at most atOnce at a time, and joins
// what they return, with ctx's error if it ended. It starts no call once
// ctx has ended, even one that was waiting for a free slot.
func Each[T any](ctx context.Context, items []T, atOnce int, visit func(T) error) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	slots := make(chan struct{}, atOnce)
	for _, item := range items {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := visit(item); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
