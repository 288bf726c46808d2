package datastore

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
)

// gatherer turns concurrent calls of one kind into shared statements: the
// calls made while a statement of that kind is in flight go to PostgreSQL
// together, as one statement and one commit, when it returns. Each
// statement costs PostgreSQL a round trip, a plan and a commit whatever
// its row count, so under load this is most of what a call costs it. A
// call made while nothing is in flight goes at once, from its own
// goroutine: a lone caller waits for no one.
//
// Two calls for the same instance never share a statement: each finds the
// rows as the one before it left them, as it would on its own.
type gatherer[Req, Res any] struct {
	// statement makes the calls as one statement, answering each in turn.
	statement func(ctx context.Context, reqs []Req) ([]Res, error)
	// instance is the instance a call is about.
	instance func(Req) uuid.UUID
	log      *zap.Logger
	// slots is how many statements of this kind may be in flight at once.
	slots int
	// most is the largest batch.
	most int

	mu       sync.Mutex
	queue    []*gathered[Req, Res]
	inFlight int
}

// gathered is one call waiting in a gatherer.
type gathered[Req, Res any] struct {
	req  Req
	res  Res
	err  error
	done chan struct{}
}

const (
	// gatherSlots is how many shared statements of one kind may be in
	// flight: more slots answer sooner under moderate load, fewer share
	// more under heavy load.
	gatherSlots = 1
	// gatherMost bounds the calls sharing one statement.
	gatherMost = 64
)

// gatherTimeout bounds one shared statement. It runs for many callers, so
// no one caller's context may cancel it; a caller that gives up stops
// waiting, like a caller whose statement is on the wire.
const gatherTimeout = 30 * time.Second

func (g *gatherer[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	c := &gathered[Req, Res]{req: req, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	lead := g.inFlight < g.slots
	if lead {
		g.inFlight++
	}
	g.mu.Unlock()
	if lead {
		// This call's batch is the first one drained, so it returns as
		// soon as its own statement does; later batches are drained by
		// another goroutine.
		g.drainOne()
		g.handOff()
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		var zero Res
		return zero, ctx.Err()
	}
}

// drainOne runs one batch from the queue, if any is waiting.
func (g *gatherer[Req, Res]) drainOne() bool {
	g.mu.Lock()
	batch := g.take()
	g.mu.Unlock()
	if len(batch) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), gatherTimeout)
	g.run(ctx, batch)
	cancel()
	for _, c := range batch {
		close(c.done)
	}
	return true
}

// run makes the batch's statement and answers its calls. When the shared
// statement fails, each call is made on its own, so that one call's
// trouble (a refused value, a deadlock with another writer) is not the
// others'.
func (g *gatherer[Req, Res]) run(ctx context.Context, batch []*gathered[Req, Res]) {
	reqs := make([]Req, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
	}
	res, err := g.statement(ctx, reqs)
	if err != nil && len(batch) > 1 {
		g.log.Warn("a shared statement failed; making its calls one by one",
			zap.Int("calls", len(batch)), zap.Error(err))
		for i := range batch {
			g.run(ctx, batch[i:i+1])
		}
		return
	}
	for i, c := range batch {
		if err != nil {
			c.err = err
			continue
		}
		c.res = res[i]
	}
}

// handOff gives up the slot, or hands it to a goroutine that drains what
// queued meanwhile.
func (g *gatherer[Req, Res]) handOff() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) == 0 {
		g.inFlight--
		return
	}
	go func() {
		for g.drainOne() {
		}
		g.handOff()
	}()
}

// take removes the next batch from the queue, oldest first, leaving a call
// for an instance already in the batch for a later one. g.mu is held.
func (g *gatherer[Req, Res]) take() []*gathered[Req, Res] {
	if len(g.queue) == 1 {
		batch := g.queue
		g.queue = nil
		return batch
	}
	var batch, left []*gathered[Req, Res]
	seen := make(map[uuid.UUID]bool, len(g.queue))
	for _, c := range g.queue {
		id := g.instance(c.req)
		if len(batch) == g.most || seen[id] {
			left = append(left, c)
			continue
		}
		seen[id] = true
		batch = append(batch, c)
	}
	g.queue = left
	return batch
}
