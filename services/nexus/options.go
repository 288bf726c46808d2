package nexus

import "github.com/rackplane/rackplane/services/nexus/saga"

// Option adjusts how New assembles a replica beyond what its config says:
// for tests and test hooks, never for settings an operator would change.
type Option func(*options)

type options struct {
	saga []saga.Option
}

// WithSagaOptions passes options to the replica's saga engine, such as
// saga.WithHooks for a test that stops a saga at a chosen node.
func WithSagaOptions(opts ...saga.Option) Option {
	return func(o *options) { o.saga = append(o.saga, opts...) }
}

func collectOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}
