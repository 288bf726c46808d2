package nexusclient

import (
	"container/list"
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
	// Retry spaces a VMM's attempts after a transient failure (V5: 250 ms
	// to 3 min). Each VMM backs off on its own.
	Retry backoff.Policy
	// AttemptTimeout bounds one attempt, so a nexus that accepts and never
	// answers is retried rather than waited on forever.
	AttemptTimeout time.Duration
}

// pending is what a VMM has not yet had delivered. It exists only while
// there is something to deliver, so the publisher holds at most one per VMM
// with news, however many changes nexus has missed.
type pending struct {
	id uuid.UUID
	// update is the coalesced update waiting to be sent; nil while the
	// VMM's only undelivered update is the one in flight.
	update *vmm.Update
	// elem is the VMM's place in Publisher.order, non-nil exactly while
	// update is.
	elem *list.Element
	// failures counts the transient failures since the VMM's last update
	// nexus took or refused for good; it drives this VMM's backoff alone.
	failures int
	retryAt  time.Time
}

type attempt struct {
	vmm    *pending
	update vmm.Update
	cancel context.CancelFunc
	done   chan struct{}
	// dropped is set by Drop: whatever nexus answers, the update is gone.
	dropped bool
}

// Publisher delivers VMM updates to nexus, one attempt at a time. Nexus
// applies a VMM's update only if its generation is newer than the stored
// one (N3), so only the latest of each VMM matters: a newer update
// replaces one still waiting, and memory is bounded by the number of VMMs.
// VMMs take turns in the order their news arrived, and one that nexus
// keeps refusing waits out its own backoff behind the others rather than
// in front of them.
type Publisher struct {
	log    *zap.Logger
	client nexusv1.NexusInternalClient // nil: no nexus configured
	cfg    PublisherConfig

	mu   sync.Mutex
	wake chan struct{}
	vmms map[uuid.UUID]*pending
	// order holds the VMMs with an update waiting, oldest news first (a
	// VMM whose attempt failed goes to the back), so that while nexus takes
	// everything, updates arrive in the order they were published.
	order  *list.List
	flight *attempt
	closed bool
	done   chan struct{}
}

// NewPublisher starts delivering to client; a nil client discards updates
// (a sled-agent run without nexus).
func NewPublisher(client nexusv1.NexusInternalClient, cfg PublisherConfig, log *zap.Logger) *Publisher {
	p := &Publisher{log: log, client: client, cfg: cfg, wake: make(chan struct{}, 1),
		vmms: map[uuid.UUID]*pending{}, order: list.New(), done: make(chan struct{})}
	go p.run()
	return p
}

// Publish implements vmm.Publisher. An update of a VMM that already has one
// waiting is coalesced into it (see coalesce); it keeps the older one's
// turn.
func (p *Publisher) Publish(u vmm.Update) {
	if p.client == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	e := p.vmms[u.VMM]
	if e == nil {
		e = &pending{id: u.VMM}
		p.vmms[u.VMM] = e
	}
	if e.update == nil {
		e.update = &u
		e.elem = p.order.PushBack(e)
	} else {
		merged := p.coalesce(*e.update, u)
		e.update = &merged
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// coalesce returns the one update that tells nexus everything older and
// newer (both of one VMM, newer published later) would: the newest of each
// part by generation. A migration side that newer does not carry is kept
// from older, so its report is not lost.
func (p *Publisher) coalesce(older, newer vmm.Update) vmm.Update {
	out := newer
	if older.Runtime.Generation > newer.Runtime.Generation {
		out.Runtime = older.Runtime
	}
	out.MigrationIn = p.newestSide(newer.VMM, "migration_in", older.MigrationIn, newer.MigrationIn)
	out.MigrationOut = p.newestSide(newer.VMM, "migration_out", older.MigrationOut, newer.MigrationOut)
	return out
}

// newestSide picks the report of one migration side to keep. Generations
// only order reports of the same migration. When the side now belongs to
// another migration, the sled has moved on: nexus starts a VMM's next
// migration only once the instance is done with the last one (settled from
// either side's word, the target sled's included, or unwound), and this
// sled no longer reports the old one anywhere, so the newer migration's
// report wins and the superseded one is logged.
func (p *Publisher) newestSide(id uuid.UUID, side string, older, newer *vmm.Migration) *vmm.Migration {
	switch {
	case newer == nil:
		return older
	case older == nil:
		return newer
	case older.ID != newer.ID:
		p.log.Warn("an undelivered migration report is superseded by the VMM's next migration", zap.Stringer("vmm_id", id),
			zap.String("side", side), zap.Stringer("migration_id", older.ID), zap.Uint64("migration_generation", older.Generation),
			zap.Stringer("next_migration_id", newer.ID))
		return newer
	case older.Generation > newer.Generation:
		return older
	}
	return newer
}

// Drop implements vmm.Publisher: the VMM's waiting update is discarded and
// an attempt in flight is cancelled and waited for.
func (p *Publisher) Drop(id uuid.UUID) {
	p.mu.Lock()
	var wait chan struct{}
	if e := p.vmms[id]; e != nil {
		p.unqueueLocked(e)
		e.failures, e.retryAt = 0, time.Time{}
		if a := p.flight; a != nil && a.vmm == e {
			// The entry stays until the attempt ends, so that an update
			// published meanwhile cannot be sent beside it.
			a.dropped = true
			a.cancel()
			wait = a.done
		} else {
			delete(p.vmms, id)
		}
	}
	p.mu.Unlock()
	if wait != nil {
		<-wait
	}
}

// Pending returns how many updates wait for delivery, the one in flight
// included: at most one per VMM, plus a newer one for the VMM in flight.
func (p *Publisher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.order.Len()
	if p.flight != nil {
		n++
	}
	return n
}

// Close stops delivery; undelivered updates are lost, as a sled-agent
// restart loses its VMMs.
func (p *Publisher) Close() {
	p.mu.Lock()
	p.closed = true
	if p.flight != nil {
		p.flight.cancel()
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	<-p.done
}

func (p *Publisher) unqueueLocked(e *pending) {
	if e.elem != nil {
		p.order.Remove(e.elem)
		e.elem = nil
	}
	e.update = nil
}

// nextLocked returns the first VMM in turn whose backoff is over, or, when
// none is, how long until one's is (negative: nothing waits at all).
func (p *Publisher) nextLocked(now time.Time) (*pending, time.Duration) {
	wait := time.Duration(-1)
	for el := p.order.Front(); el != nil; el = el.Next() {
		e := el.Value.(*pending)
		d := e.retryAt.Sub(now)
		if d <= 0 {
			return e, 0
		}
		if wait < 0 || d < wait {
			wait = d
		}
	}
	return nil, wait
}

func (p *Publisher) run() {
	defer close(p.done)
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		e, wait := p.nextLocked(time.Now())
		if e == nil {
			p.mu.Unlock()
			p.idle(wait)
			continue
		}
		u := *e.update
		p.unqueueLocked(e)
		ctx, cancel := context.WithCancel(context.Background())
		a := &attempt{vmm: e, update: u, cancel: cancel, done: make(chan struct{})}
		p.flight = a
		p.mu.Unlock()

		actx, acancel := context.WithTimeout(ctx, p.cfg.AttemptTimeout)
		_, err := p.client.VmmStateUpdate(actx, UpdateProto(p.cfg.SledID, u))
		acancel()
		cancel()

		p.mu.Lock()
		p.settleLocked(a, err)
		p.flight = nil
		close(a.done)
		p.mu.Unlock()
	}
}

// idle waits for news, or for wait (when not negative) to pass.
func (p *Publisher) idle(wait time.Duration) {
	if wait < 0 {
		<-p.wake
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-p.wake:
	case <-t.C:
	}
}

// settleLocked records how an attempt ended.
func (p *Publisher) settleLocked(a *attempt, err error) {
	e, u := a.vmm, a.update
	log := p.log.With(zap.Stringer("vmm_id", u.VMM), zap.Stringer("state", u.Runtime.State),
		zap.Uint64("generation", u.Runtime.Generation))
	switch {
	case a.dropped || p.closed:
	case err == nil:
		log.Debug("VMM update published", zap.Int("attempts", e.failures+1))
		e.failures, e.retryAt = 0, time.Time{}
	case Permanent(err):
		// What comes next for this VMM is newer and may fare better (a
		// malformed update is not the next one), so only this one goes.
		log.Warn("nexus refused a VMM update for good; dropping it", zap.Error(err), zap.Int("attempts", e.failures+1))
		e.failures, e.retryAt = 0, time.Time{}
	default:
		// The update may have been applied even so (a timeout after the
		// write): what is retried is never older in any part, so nexus
		// never sees this VMM go back.
		if e.update == nil {
			e.update = &u
		} else {
			merged := p.coalesce(u, *e.update)
			e.update = &merged
			p.order.Remove(e.elem)
		}
		e.elem = p.order.PushBack(e)
		delay := p.cfg.Retry.Delay(e.failures)
		e.failures++
		e.retryAt = time.Now().Add(delay)
		log.Warn("publishing VMM update failed; retrying", zap.Error(err), zap.Int("attempt", e.failures),
			zap.Uint64("retry_generation", e.update.Runtime.Generation), zap.Duration("retry_in", delay))
	}
	if e.update == nil && p.vmms[e.id] == e {
		delete(p.vmms, e.id)
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
