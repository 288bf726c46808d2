package sledclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/pkg/fanout"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// classify wraps a sled-agent error in model.ErrVMMGone or
// model.ErrSledUnreachable where it is one, keeping the original in the
// chain.
func classify(sled uuid.UUID, err error) error {
	if err == nil {
		return nil
	}
	switch st, _ := status.FromError(err); {
	case st.Code() == codes.NotFound && apierror.Reason(err) == "NO_SUCH_VMM":
		return fmt.Errorf("%w: sled %s: %v", model.ErrVMMGone, sled, err)
	case st.Code() == codes.FailedPrecondition && apierror.Reason(err) == "GENERATION_OUTDATED":
		return fmt.Errorf("%w: sled %s: %v", model.ErrZonesOutdated, sled, err)
	case st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: sled %s: %v", model.ErrSledUnreachable, sled, err)
	}
	return fmt.Errorf("sled %s: %w", sled, err)
}

// Resolver lists where every live sled's agent listens. The pool reads
// the whole list at once: a pass over 1,000 sleds then costs one read of
// it, not 1,000.
type Resolver interface {
	SledAddresses(ctx context.Context) (map[uuid.UUID]string, error)
}

type conn struct {
	addr string
	cc   *grpc.ClientConn
}

// addressTTL is how long the sleds' addresses are trusted before they are
// read from the database again: a sled that re-registers elsewhere is
// reached at its new address within this long, and a request need not
// read its sled's address every time (one round trip of each
// force-terminate).
const addressTTL = 10 * time.Second

// missReread is how often at most a sled missing from the addresses makes
// the pool read them again (a sled that has just registered): calls naming
// a sled that is not there share one read a second, not one each.
const missReread = time.Second

// Pool keeps one connection per sled, redialling when a sled's address
// changes (it re-registered elsewhere).
type Pool struct {
	resolver Resolver
	trust    rackpki.Trust

	mu     sync.Mutex
	conns  map[uuid.UUID]conn
	closed bool

	book addressBook
}

// addressBook is the sleds' addresses as last read, and the read in
// flight, which every caller that needs a fresher book waits for.
type addressBook struct {
	mu    sync.Mutex
	addrs map[uuid.UUID]string
	// began is when the read that found addrs was sent: addrs hold every
	// sled registered before it, and are trusted for addressTTL from it.
	began time.Time
	// lastBegan is when the last read, answered or not, was sent.
	lastBegan time.Time
	reading   chan struct{}
	err       error
}

// CallTimeout bounds a sled-agent call made without a deadline of its own
// (a saga step, a stop): a sled that accepts calls and never answers then
// reads as unreachable (ErrSledUnreachable) instead of holding the caller.
const CallTimeout = 10 * time.Second

// NewPool returns an empty pool whose connections are mutual TLS with
// trust, each to the sled it names (S2): whoever answers at a sled's
// address must hold that sled's certificate.
func NewPool(r Resolver, trust rackpki.Trust) *Pool {
	return &Pool{resolver: r, trust: trust, conns: map[uuid.UUID]conn{}}
}

// address is where sled listens: from addresses read within addressTTL,
// or read again. When that read fails, an older address of the sled is
// still better than none: a database that does not answer must not cut
// nexus off its sleds. A sled is not registered only if addresses read
// since this call began lack it: a sled that registered just after a read
// (as nexus starts, while its sleds register) is found by a call made
// right after, once the next read is due (missReread), rather than
// refused.
func (p *Pool) address(ctx context.Context, sled uuid.UUID) (string, error) {
	b := &p.book
	asked := time.Now()
	for waited := false; ; waited = true {
		b.mu.Lock()
		addr, ok := b.addrs[sled]
		switch {
		case ok && (time.Since(b.began) < addressTTL || waited):
			b.mu.Unlock()
			return addr, nil
		case waited && b.err != nil:
			err := b.err
			b.mu.Unlock()
			return "", err
		case !ok && b.addrs != nil && !b.began.Before(asked):
			b.mu.Unlock()
			return "", fmt.Errorf("%w: sled %s is not registered", model.ErrNotFound, sled)
		}
		var after time.Duration
		if !ok {
			after = missReread - time.Since(b.lastBegan)
		}
		b.mu.Unlock()
		if err := p.awaitRead(ctx, after); err != nil && ctx.Err() != nil {
			return "", err
		}
	}
}

// awaitRead waits for the read of the addresses in flight, or starts one
// (after waiting for after, on its own deadline: it serves every caller
// waiting, not only the first). It returns ctx's error, or the read's.
func (p *Pool) awaitRead(ctx context.Context, after time.Duration) error {
	b := &p.book
	b.mu.Lock()
	reading := b.reading
	if reading == nil {
		reading = make(chan struct{})
		b.reading = reading
		go p.readAddresses(reading, after)
	}
	b.mu.Unlock()
	select {
	case <-reading:
	case <-ctx.Done():
		return ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// readAddresses reads the addresses of every sled into the book, once
// after has passed (misses share one read per missReread).
func (p *Pool) readAddresses(done chan struct{}, after time.Duration) {
	if after > 0 {
		time.Sleep(after)
	}
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	b := &p.book
	b.mu.Lock()
	began := time.Now()
	b.lastBegan = began
	b.mu.Unlock()
	addrs, err := p.resolver.SledAddresses(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err = err; err == nil {
		b.addrs, b.began = addrs, began
	}
	b.reading = nil
	close(done)
}

// client returns a client for the sled.
func (p *Pool) client(ctx context.Context, sled uuid.UUID) (sledagentv1.SledAgentClient, error) {
	cc, err := p.conn(ctx, sled)
	if err != nil {
		return nil, err
	}
	return sledagentv1.NewSledAgentClient(cc), nil
}

// conn returns the sled's connection, dialled (lazily) if it has none or
// its address changed.
func (p *Pool) conn(ctx context.Context, sled uuid.UUID) (*grpc.ClientConn, error) {
	addr, err := p.address(ctx, sled)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("%w: sled %s: nexus is shutting down", model.ErrSledUnreachable, sled)
	}
	if c, ok := p.conns[sled]; ok && c.addr == addr {
		return c.cc, nil
	} else if ok {
		c.cc.Close()
	}
	cc, err := grpcconn.Dial(addr, p.trust, rackpki.Identity{Kind: rackpki.Sled, ID: sled.String()}, CallTimeout)
	if err != nil {
		return nil, err
	}
	p.conns[sled] = conn{addr: addr, cc: cc}
	return cc, nil
}

const (
	// warmAtOnce bounds how many sleds Warm connects to at once: enough to
	// be done with 1,000 sleds well before the first pass, few enough that
	// the handshakes do not starve the API of the CPU it serves with.
	warmAtOnce = 8
	// warmTimeout bounds the wait for one sled's connection: a sled that
	// does not answer is left to the calls that need it.
	warmTimeout = 5 * time.Second
)

// Warm connects to every registered sled, warmAtOnce at a time, and
// returns how many connections are ready. A pass over every sled that
// found no connection would pay a mutual TLS handshake per sled: at 1,000
// sleds, the first passes after nexus started took 4-9 s where the next
// took under 2 (SPEC 6 asks for 5), and the API's latency during them grew
// with them. A sled that cannot be reached is not waited for beyond
// warmTimeout, and its connection retries as any other would.
func (p *Pool) Warm(ctx context.Context) (ready int, err error) {
	// One read of the addresses, which the connections below then use.
	if err := p.awaitRead(ctx, 0); err != nil {
		return 0, err
	}
	p.book.mu.Lock()
	sleds := slices.Collect(maps.Keys(p.book.addrs))
	p.book.mu.Unlock()
	var readyCount atomic.Int64
	err = fanout.Each(ctx, sleds, warmAtOnce, func(sled uuid.UUID) error {
		wctx, cancel := context.WithTimeout(ctx, warmTimeout)
		defer cancel()
		cc, err := p.conn(wctx, sled)
		if err != nil {
			return nil // not ready; its calls dial it again
		}
		cc.Connect()
		for state := cc.GetState(); state != connectivity.Ready; state = cc.GetState() {
			if state == connectivity.TransientFailure || state == connectivity.Shutdown || !cc.WaitForStateChange(wctx, state) {
				return nil
			}
		}
		readyCount.Add(1)
		return nil
	})
	return int(readyCount.Load()), err
}

// Close closes every connection; calls after it find no sled.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for id, c := range p.conns {
		c.cc.Close()
		delete(p.conns, id)
	}
}
