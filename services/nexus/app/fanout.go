package app

import (
	"context"
	"errors"
	"sync"
)

// sledsAtOnce bounds how many sleds a background pass talks to at once:
// a pass over 1,000 sleds one at a time takes 1,000 round trips (SPEC 6
// wants one in 5 s), while a sled that does not answer holds only one of
// these slots until its call times out.
const sledsAtOnce = 32

// eachSled calls visit for every sled, sledsAtOnce at a time, and joins
// what they return. It stops starting new calls once ctx ends.
func eachSled[T any](ctx context.Context, sleds []T, visit func(T) error) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	slots := make(chan struct{}, sledsAtOnce)
	for _, s := range sleds {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if err := visit(s); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
