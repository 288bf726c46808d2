package nexusclient

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/services/sledagent/vmm"
	"github.com/rackplane/rackplane/services/sledagent/wire"
)

var _ vmm.Publisher = (*Publisher)(nil)

// Permanent reports whether an error from nexus means that sending the same
// request again cannot succeed.
func Permanent(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented, codes.Unauthenticated:
		return true
	}
	return false
}

// PublisherConfig tunes delivery.
type PublisherConfig struct {
	SledID uuid.UUID
	// Retry spaces attempts after a transient failure (V5: 250 ms to 3 min).
	Retry backoff.Policy
	// AttemptTimeout bounds one attempt, so a nexus that accepts and never
	// answers is retried rather than waited on forever.
	AttemptTimeout time.Duration
}

type inflight struct {
	vmm    uuid.UUID
	cancel context.CancelFunc
	done   chan struct{}
}

// Publisher delivers VMM updates to nexus one at a time, in the order they
// were published.
type Publisher struct {
	log    *zap.Logger
	client nexusv1.NexusInternalClient // nil: no nexus configured
	cfg    PublisherConfig

	mu       sync.Mutex
	wake     chan struct{}
	queue    []vmm.Update
	inflight *inflight
	closed   bool
	done     chan struct{}
}

// NewPublisher starts delivering to client; a nil client discards updates
// (a sled-agent run without nexus).
func NewPublisher(client nexusv1.NexusInternalClient, cfg PublisherConfig, log *zap.Logger) *Publisher {
	p := &Publisher{log: log, client: client, cfg: cfg, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go p.run()
	return p
}

// Publish implements vmm.Publisher.
func (p *Publisher) Publish(u vmm.Update) {
	if p.client == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.queue = append(p.queue, u)
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Drop implements vmm.Publisher: queued updates of the VMM are discarded and
// an attempt in flight is cancelled and waited for.
func (p *Publisher) Drop(id uuid.UUID) {
	p.mu.Lock()
	kept := p.queue[:0]
	for _, u := range p.queue {
		if u.VMM != id {
			kept = append(kept, u)
		}
	}
	clear(p.queue[len(kept):])
	p.queue = kept
	var wait chan struct{}
	if f := p.inflight; f != nil && f.vmm == id {
		f.cancel()
		wait = f.done
	}
	p.mu.Unlock()
	if wait != nil {
		<-wait
	}
}

// Pending returns how many updates wait for delivery, the one in flight
// included.
func (p *Publisher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.queue)
	if p.inflight != nil {
		n++
	}
	return n
}

// Close stops delivery; undelivered updates are lost, as a sled-agent
// restart loses its VMMs.
func (p *Publisher) Close() {
	p.mu.Lock()
	p.closed = true
	if p.inflight != nil {
		p.inflight.cancel()
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	<-p.done
}

func (p *Publisher) run() {
	defer close(p.done)
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		if len(p.queue) == 0 {
			p.mu.Unlock()
			<-p.wake
			continue
		}
		u := p.queue[0]
		p.queue = p.queue[1:]
		ctx, cancel := context.WithCancel(context.Background())
		f := &inflight{vmm: u.VMM, cancel: cancel, done: make(chan struct{})}
		p.inflight = f
		p.mu.Unlock()

		p.deliver(ctx, u)
		cancel()

		p.mu.Lock()
		p.inflight = nil
		close(f.done)
		p.mu.Unlock()
	}
}

// deliver sends one update until nexus takes it, refuses it for good, or ctx
// ends (the VMM was unregistered, or the agent is stopping).
func (p *Publisher) deliver(ctx context.Context, u vmm.Update) {
	req := UpdateProto(p.cfg.SledID, u)
	log := p.log.With(zap.Stringer("vmm_id", u.VMM), zap.Stringer("state", u.Runtime.State),
		zap.Uint64("generation", u.Runtime.Generation))
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, p.cfg.AttemptTimeout)
		_, err := p.client.VmmStateUpdate(actx, req)
		cancel()
		switch {
		case err == nil:
			log.Debug("VMM update published", zap.Int("attempts", attempt+1))
			return
		case ctx.Err() != nil:
			return
		case Permanent(err):
			log.Error("nexus refused a VMM update for good; dropping it", zap.Error(err))
			return
		}
		delay := p.cfg.Retry.Delay(attempt)
		log.Warn("publishing VMM update failed; retrying", zap.Error(err), zap.Int("attempt", attempt+1),
			zap.Duration("retry_in", delay))
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
	}
}

// UpdateProto is the wire form of an update.
func UpdateProto(sled uuid.UUID, u vmm.Update) *nexusv1.VmmStateUpdateRequest {
	return &nexusv1.VmmStateUpdateRequest{
		VmmId:        u.VMM.String(),
		SledId:       sled.String(),
		Runtime:      wire.RuntimeProto(u.Runtime),
		MigrationIn:  wire.MigrationProto(u.MigrationIn),
		MigrationOut: wire.MigrationProto(u.MigrationOut),
	}
}
