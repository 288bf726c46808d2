package sledclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
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

// Resolver finds the address a sled registered.
type Resolver interface {
	SledAddress(ctx context.Context, sled uuid.UUID) (string, error)
}

type conn struct {
	addr     string
	cc       *grpc.ClientConn
	resolved time.Time
}

// addressTTL is how long a sled's address is trusted before it is read
// from the database again: a sled that re-registers elsewhere is reached
// at its new address within this long, and a request need not read the
// address every time (one round trip of each force-terminate).
const addressTTL = 10 * time.Second

// Pool keeps one connection per sled, redialling when a sled's address
// changes (it re-registered elsewhere).
type Pool struct {
	resolver Resolver
	trust    rackpki.Trust

	mu    sync.Mutex
	conns map[uuid.UUID]conn
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

// client returns a client for the sled.
func (p *Pool) client(ctx context.Context, sled uuid.UUID) (sledagentv1.SledAgentClient, error) {
	p.mu.Lock()
	c, ok := p.conns[sled]
	p.mu.Unlock()
	if ok && time.Since(c.resolved) < addressTTL {
		return sledagentv1.NewSledAgentClient(c.cc), nil
	}
	addr, err := p.resolver.SledAddress(ctx, sled)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if c, ok := p.conns[sled]; ok && c.addr == addr {
		c.resolved = now
		p.conns[sled] = c
		return sledagentv1.NewSledAgentClient(c.cc), nil
	} else if ok {
		c.cc.Close()
	}
	cc, err := grpcconn.Dial(addr, p.trust, rackpki.Identity{Kind: rackpki.Sled, ID: sled.String()}, CallTimeout)
	if err != nil {
		return nil, err
	}
	p.conns[sled] = conn{addr: addr, cc: cc, resolved: now}
	return sledagentv1.NewSledAgentClient(cc), nil
}

// Close closes every connection.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.conns {
		c.cc.Close()
		delete(p.conns, id)
	}
}
