package app

import (
	"context"

	"github.com/rackplane/rackplane/pkg/fanout"
)

// sledsAtOnce bounds how many sleds a background pass talks to at once:
// a pass over 1,000 sleds one at a time takes 1,000 round trips (SPEC 6
// wants one in 5 s), while a sled that does not answer holds only one of
// these slots until its call times out.
const sledsAtOnce = 32

// eachSled calls visit for every sled, sledsAtOnce at a time, and joins
// what they return. It stops starting new calls once ctx ends.
func eachSled[T any](ctx context.Context, sleds []T, visit func(T) error) error {
	return fanout.Each(ctx, sleds, sledsAtOnce, visit)
}
