package nexus

import (
	"time"

	"github.com/rackplane/rackplane/services/nexus/saga"
)

// Option adjusts how New assembles a replica beyond what its config says:
// for tests and test hooks, never for settings an operator would change.
type Option func(*options)

type options struct {
	saga          []saga.Option
	awayUndoBound time.Duration
}

// WithSagaOptions passes options to the replica's saga engine, such as
// saga.WithHooks for a test that stops a saga at a chosen node.
func WithSagaOptions(opts ...saga.Option) Option {
	return func(o *options) { o.saga = append(o.saga, opts...) }
}

// WithAwayUndoBound shortens how long an undo waits for its sled or the
// database before its saga is stuck (awayUndoBound), for a test of a sled
// lost for good.
func WithAwayUndoBound(d time.Duration) Option {
	return func(o *options) { o.awayUndoBound = d }
}

func collectOptions(opts []Option) options {
	o := options{awayUndoBound: awayUndoBound}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}
