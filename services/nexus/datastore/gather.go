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
// call made while nothing is in flight goes at once: a lone caller waits
// for no one.
//
// A call's outcome depends only on its own rows:
//   - Two calls for the same instance never share a statement: each finds
//     the rows as the one before it left them, as it would on its own.
//   - A shared statement never waits for a row lock (see together): a row
//     another transaction holds would hold up every call in the batch and
//     every batch queued behind it. A call whose rows were skipped is made
//     again alone, by its caller, under its own deadline.
//   - When a shared statement fails or times out, each of its calls is
//     made again alone the same way.
//   - A lone call is made alone from the start, under its caller's
//     deadline, and may wait for a lock; if it takes longer than
//     loneStall, the next batch goes without waiting for it.
//   - One call per instance at a time is made alone: the others for that
//     instance wait in Go, so that many calls for one held row cannot take
//     every connection of the pool.
//
// And nothing is written for a caller that gave up: a call whose caller
// gave up before its statement went is dropped, and a statement in flight
// is cancelled as soon as one of its callers gives up (the others make
// their calls again alone), so a wish is not written after a later
// request that its caller's timeout let through.
type gatherer[Req, Res any] struct {
	// together makes two or more calls as one statement that never waits
	// for a row lock, answering each in turn.
	together func(ctx context.Context, reqs []Req) ([]Res, error)
	// answered says whether together answered a call, rather than leaving
	// it (a row another transaction held) to be made alone; nil: it
	// answers every call.
	answered func(Res) bool
	// alone makes one call by itself, under its caller's context.
	alone func(ctx context.Context, req Req) (Res, error)
	// instance is the instance a call is about.
	instance func(Req) uuid.UUID
	log      *zap.Logger
	// slots is how many statements of this kind may be in flight at once.
	slots int
	// most is the largest batch.
	most int
	// timeout bounds one shared statement.
	timeout time.Duration

	mu       sync.Mutex
	queue    []*gathered[Req, Res]
	inFlight int
	// alones holds, per instance, the call made alone in flight; it is
	// closed when that call returns.
	alones map[uuid.UUID]chan struct{}
}

// gathered is one call waiting in a gatherer.
type gathered[Req, Res any] struct {
	ctx context.Context
	req Req
	res Res
	err error
	// alone: no shared statement answered the call, and its caller makes
	// it on its own.
	alone bool
	done  chan struct{}
}

const (
	// gatherSlots is how many shared statements of one kind may be in
	// flight: more slots answer sooner under moderate load, fewer share
	// more under heavy load.
	gatherSlots = 1
	// gatherMost bounds the calls sharing one statement.
	gatherMost = 64
	// gatherTimeout bounds one shared statement: it waits for no row
	// lock, so only a database in trouble gets near it.
	gatherTimeout = 5 * time.Second
	// loneStall is how long a lone call holds its slot: longer (a row
	// lock, a slow commit), and the calls queued behind it go in a
	// statement of their own meanwhile.
	loneStall = 20 * time.Millisecond
)

func newGatherer[Req, Res any](log *zap.Logger, instance func(Req) uuid.UUID,
	together func(context.Context, []Req) ([]Res, error), answered func(Res) bool,
	alone func(context.Context, Req) (Res, error)) *gatherer[Req, Res] {
	return &gatherer[Req, Res]{together: together, answered: answered, alone: alone, instance: instance, log: log,
		slots: gatherSlots, most: gatherMost, timeout: gatherTimeout, alones: map[uuid.UUID]chan struct{}{}}
}

func (g *gatherer[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	c := &gathered[Req, Res]{ctx: ctx, req: req, done: make(chan struct{})}
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
		if _, holds := g.drainOne(); holds {
			g.handOff()
		}
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		var zero Res
		return zero, ctx.Err()
	}
	if c.alone {
		if err := ctx.Err(); err != nil {
			var zero Res
			return zero, err
		}
		return g.oneAlone(ctx, req)
	}
	return c.res, c.err
}

// oneAlone makes a call alone once no other call for its instance is
// being made alone: calls for one instance whose row another transaction
// holds wait here, under their callers' contexts, rather than each on a
// connection of the pool, which they would otherwise fill, holding up
// every other call and every other use of the database.
func (g *gatherer[Req, Res]) oneAlone(ctx context.Context, req Req) (Res, error) {
	id := g.instance(req)
	for {
		g.mu.Lock()
		busy, taken := g.alones[id]
		if !taken {
			g.alones[id] = make(chan struct{})
			g.mu.Unlock()
			break
		}
		g.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			var zero Res
			return zero, ctx.Err()
		}
	}
	defer func() {
		g.mu.Lock()
		close(g.alones[id])
		delete(g.alones, id)
		g.mu.Unlock()
	}()
	return g.alone(ctx, req)
}

// drainOne runs one batch from the queue, if any is waiting: ran says
// whether it did, holds whether this goroutine still holds the slot (a
// lone call that stalled gave it away).
func (g *gatherer[Req, Res]) drainOne() (ran, holds bool) {
	g.mu.Lock()
	batch := g.take()
	g.mu.Unlock()
	switch len(batch) {
	case 0:
		return false, true
	case 1:
		return true, g.runLone(batch[0])
	}
	g.run(batch)
	for _, c := range batch {
		close(c.done)
	}
	return true, true
}

// runLone makes a lone call alone, under its caller's context. If it
// stalls, the slot goes to the calls queued meanwhile; it reports whether
// it still holds the slot.
func (g *gatherer[Req, Res]) runLone(c *gathered[Req, Res]) (holds bool) {
	stalled := time.AfterFunc(loneStall, g.handOff)
	c.res, c.err = g.oneAlone(c.ctx, c.req)
	holds = stalled.Stop()
	close(c.done)
	return holds
}

// run makes the batch's shared statement and answers its calls; each call
// it did not answer, or all of them when it failed, is left to be made
// alone by its caller.
func (g *gatherer[Req, Res]) run(batch []*gathered[Req, Res]) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	reqs := make([]Req, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
		defer context.AfterFunc(c.ctx, cancel)()
	}
	res, err := g.together(ctx, reqs)
	if err != nil {
		g.log.Warn("a shared statement failed; each of its calls is made alone",
			zap.Int("calls", len(batch)), zap.Error(err))
		for _, c := range batch {
			c.alone = true
		}
		return
	}
	for i, c := range batch {
		c.res = res[i]
		c.alone = g.answered != nil && !g.answered(res[i])
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
		for {
			ran, holds := g.drainOne()
			if !holds {
				return
			}
			if !ran {
				break
			}
		}
		g.handOff()
	}()
}

// take removes the next batch from the queue, oldest first, leaving a call
// for an instance already in the batch for a later one, and dropping the
// calls whose callers gave up. g.mu is held.
func (g *gatherer[Req, Res]) take() []*gathered[Req, Res] {
	var batch, left []*gathered[Req, Res]
	seen := make(map[uuid.UUID]bool, len(g.queue))
	for _, c := range g.queue {
		if err := c.ctx.Err(); err != nil {
			c.err = err
			close(c.done)
			continue
		}
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
