package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
)

// execution is one saga being driven by this engine. Only its goroutine
// touches it until done closes.
type execution struct {
	rec     Record
	tmpl    Template
	log     *zap.Logger
	events  sagaLog
	outputs map[string]json.RawMessage
	cause   *ActionError

	done   chan struct{}
	result Result
	err    error
}

func (e *Engine) newExecution(rec Record, tmpl Template, events []Event) (*execution, error) {
	for _, ev := range events {
		if !tmpl.has(ev.Node) {
			return nil, fmt.Errorf("saga %s: its log names node %q, which template %q does not have", rec.ID, ev.Node, tmpl.Name)
		}
	}
	l := indexLog(events)
	return &execution{
		rec: rec, tmpl: tmpl, events: l, outputs: l.outputs(), cause: l.cause(rec.ID),
		log:  e.log.With(zap.Stringer("saga_id", rec.ID), zap.String("saga", tmpl.Name)),
		done: make(chan struct{}),
	}, nil
}

func (x *execution) wait(ctx context.Context) (Result, error) {
	select {
	case <-x.done:
		return x.result, x.err
	case <-ctx.Done():
		return Result{ID: x.rec.ID, Template: x.rec.Template}, ctx.Err()
	}
}

func (x *execution) context(node string) *Context {
	return &Context{id: x.rec.ID, node: node, params: x.rec.Params, outputs: x.outputs,
		log: x.log.With(zap.String("node", node))}
}

func (e *Engine) execute(x *execution) {
	defer e.inFlight.Done()
	e.stats.running.Add(1)
	err := e.drive(x)
	e.stats.running.Add(-1)
	switch {
	case err == nil:
		x.log.Info("saga done")
	case errors.Is(err, ErrStopped):
		x.log.Info("saga stopped at a durable point; Recover resumes it", zap.String("state", string(x.rec.State)))
	case x.rec.State == StateUnwound:
		x.log.Info("saga unwound", zap.Error(err))
	case x.rec.State != StateStuck: // stuck is logged where it is decided
		x.log.Error("saga abandoned", zap.Error(err))
	}
	x.result = Result{ID: x.rec.ID, Template: x.rec.Template, State: x.rec.State, Outputs: maps.Clone(x.outputs)}
	x.err = err
	e.mu.Lock()
	delete(e.running, x.rec.ID)
	e.mu.Unlock()
	close(x.done)
}

// drive takes a saga from wherever its log says it is to its end, or to the
// point where the engine was told to stop.
func (e *Engine) drive(x *execution) error {
	if x.rec.State == StateRunning {
		if err := e.forward(x); err != nil {
			return err
		}
		if x.rec.State == StateDone {
			return nil
		}
	}
	if x.rec.State != StateUnwinding {
		return fmt.Errorf("saga %s is %s, which nothing resumes", x.rec.ID, x.rec.State)
	}
	return e.unwind(x)
}

// forward runs every node not yet succeeded, in order, and ends with the
// saga done or unwinding.
func (e *Engine) forward(x *execution) error {
	for _, n := range x.tmpl.Nodes {
		if x.events.has(n.Name, EventSucceeded) {
			continue
		}
		if !x.events.has(n.Name, EventFailed) {
			if err := e.runNode(x, n); err != nil {
				return err
			}
		}
		if x.events.has(n.Name, EventFailed) {
			return e.setState(x, StateUnwinding)
		}
	}
	return e.setState(x, StateDone)
}

// runNode runs a node's action between its started and outcome events. A
// nil error means the outcome is logged, success or failure.
func (e *Engine) runNode(x *execution, n Node) error {
	if err := e.checkStop(); err != nil {
		return err
	}
	// Started already: an earlier run of this node ended without an
	// outcome (a crash), and may have taken effect.
	interrupted := x.events.has(n.Name, EventStarted)
	if err := e.record(x, n.Name, EventStarted, nil, ""); err != nil {
		return err
	}
	e.hook(e.hooks.BeforeNode, x, n.Name)
	if err := e.checkStop(); err != nil {
		return err
	}
	out, actErr := e.act(x, n)
	e.hook(e.hooks.AfterNode, x, n.Name)
	tookEffect := interrupted
	if actErr == nil && e.injectError != nil {
		if actErr = e.injectError(x.tmpl.Name, n.Name); actErr != nil {
			tookEffect = true // the action ran: its effect must be undone
		}
	}
	if actErr != nil && e.ambiguous != nil && e.ambiguous(actErr) {
		tookEffect = true // its write may have committed before the error
	}
	if actErr != nil {
		if e.runCtx.Err() != nil {
			// Most likely the cancellation itself, not a verdict on the
			// action: leave it to be run again by Recover.
			return fmt.Errorf("saga %s, node %q: %w", x.rec.ID, n.Name, ErrStopped)
		}
		x.log.Warn("saga action failed; unwinding", zap.String("node", n.Name), zap.Error(actErr),
			zap.Bool("may_have_taken_effect", tookEffect))
		x.cause = &ActionError{SagaID: x.rec.ID, Node: n.Name, Err: actErr}
		var mark json.RawMessage
		if tookEffect {
			mark = effectMark
		}
		return e.record(x, n.Name, EventFailed, mark, actErr.Error())
	}
	if err := e.record(x, n.Name, EventSucceeded, out, ""); err != nil {
		return err
	}
	if out != nil {
		x.outputs[n.Name] = out
	}
	return nil
}

func (e *Engine) act(x *execution, n Node) (json.RawMessage, error) {
	sc := x.context(n.Name)
	var out any
	for range e.repeat {
		err := guard(sc, func() (err error) {
			out, err = n.Action(e.runCtx, sc)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	if out == nil {
		return nil, nil
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encoding the output of node %q: %w", n.Name, err)
	}
	return raw, nil
}

// unwind undoes, last first, every node whose action may have taken
// effect: succeeded, or started with no outcome logged. A failed action
// left nothing to undo, unless an earlier run of it was interrupted: that
// run may have taken effect.
func (e *Engine) unwind(x *execution) error {
	if x.cause == nil {
		x.cause = &ActionError{SagaID: x.rec.ID, Err: errors.New("no failed action in the log")}
	}
	for i := len(x.tmpl.Nodes) - 1; i >= 0; i-- {
		n := x.tmpl.Nodes[i]
		mayHaveRun := x.events.has(n.Name, EventStarted) || x.events.has(n.Name, EventSucceeded)
		failedCleanly := x.events.has(n.Name, EventFailed) && !x.events.failedAfterEffect(n.Name)
		if n.Undo == nil || !mayHaveRun || failedCleanly || x.events.has(n.Name, EventUndoSucceeded) {
			continue
		}
		if ev, ok := x.events[n.Name][EventUndoFailed]; ok {
			// The previous run logged the failure but not the state.
			return e.markStuck(x, n.Name, errors.New(ev.Error))
		}
		if err := e.undoNode(x, n); err != nil {
			return err
		}
	}
	if err := e.setState(x, StateUnwound); err != nil {
		return err
	}
	return x.cause
}

func (e *Engine) undoNode(x *execution, n Node) error {
	if err := e.checkStop(); err != nil {
		return err
	}
	if err := e.record(x, n.Name, EventUndoStarted, nil, ""); err != nil {
		return err
	}
	e.hook(e.hooks.BeforeUndo, x, n.Name)
	if err := e.checkStop(); err != nil {
		return err
	}
	sc := x.context(n.Name)
	var (
		undoErr     error
		firstFailed time.Time
	)
	for attempt, failures := 0, 0; ; attempt++ {
		if attempt > 0 {
			delay := e.undoBackoff.Delay(attempt - 1)
			x.log.Warn("saga undo failed; retrying", zap.String("node", n.Name), zap.Int("attempt", attempt),
				zap.Duration("retry_in", delay), zap.Error(undoErr))
			if !e.pause(delay) {
				return fmt.Errorf("saga %s, undo of %q: %w", x.rec.ID, n.Name, ErrStopped)
			}
		}
		if undoErr = e.undo(sc, n); undoErr == nil {
			break
		}
		if e.runCtx.Err() != nil {
			return fmt.Errorf("saga %s, undo of %q: %w", x.rec.ID, n.Name, ErrStopped)
		}
		if firstFailed.IsZero() {
			firstFailed = e.now()
		}
		if e.undoTransient != nil && e.undoTransient(undoErr) && e.now().Sub(firstFailed) < e.undoTransientBound {
			continue
		}
		if failures++; failures >= e.undoAttempts {
			break
		}
	}
	e.hook(e.hooks.AfterUndo, x, n.Name)
	if undoErr != nil {
		return e.markStuck(x, n.Name, undoErr)
	}
	return e.record(x, n.Name, EventUndoSucceeded, nil, "")
}

func (e *Engine) undo(sc *Context, n Node) error {
	for range e.repeat {
		if err := guard(sc, func() error { return n.Undo(e.runCtx, sc) }); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) markStuck(x *execution, node string, undoErr error) error {
	if err := e.record(x, node, EventUndoFailed, nil, undoErr.Error()); err != nil {
		return err
	}
	if err := e.setState(x, StateStuck); err != nil {
		return err
	}
	stuck := &StuckError{SagaID: x.rec.ID, Node: node, Err: undoErr, Cause: x.cause}
	x.log.Error("saga stuck: an undo keeps failing; an operator must intervene",
		zap.String("node", node), zap.Error(undoErr), zap.NamedError("cause", x.cause))
	return stuck
}

// guard turns a panicking action or undo into its failure, so that one bad
// saga unwinds instead of crashing nexus, and again after every restart.
func guard(sc *Context, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			sc.log.Error("saga node panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}

func (e *Engine) hook(h func(uuid.UUID, string), x *execution, node string) {
	if h != nil {
		h(x.rec.ID, node)
	}
}

// checkStop is called before anything that takes the saga past its last
// durable point.
func (e *Engine) checkStop() error {
	select {
	case <-e.stopping:
		return ErrStopped
	default:
	}
	if e.runCtx.Err() != nil {
		return ErrStopped
	}
	return nil
}

// pause waits d unless the engine is told to stop first.
func (e *Engine) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.stopping:
		return false
	case <-e.runCtx.Done():
		return false
	}
}

// record logs an event once: the log is idempotent, so an event already
// replayed from it is not written again.
func (e *Engine) record(x *execution, node string, t EventType, out json.RawMessage, errText string) error {
	if x.events.has(node, t) {
		return nil
	}
	ev := Event{SagaID: x.rec.ID, Node: node, Type: t, Output: out, Error: errText, Time: e.now()}
	if err := e.persist(x, string(t)+" "+node, func(ctx context.Context) error {
		return e.store.SagaAppendEvent(ctx, ev)
	}); err != nil {
		return err
	}
	x.events.add(ev)
	return nil
}

func (e *Engine) setState(x *execution, to State) error {
	from := x.rec.State
	var wrote bool
	err := e.persist(x, "state "+string(to), func(ctx context.Context) error {
		var err error
		if wrote, err = e.store.SagaUpdateState(ctx, x.rec.ID, e.nexusID, from, to, e.now()); err != nil || wrote {
			return err
		}
		// A retried write may find its own earlier success.
		rec, err := e.store.SagaGet(ctx, x.rec.ID)
		wrote = err == nil && rec.State == to && rec.Owner == e.nexusID
		return err
	})
	if err != nil {
		return err
	}
	if !wrote {
		x.log.Error("saga row changed under its engine; leaving the saga alone",
			zap.String("from", string(from)), zap.String("to", string(to)))
		return fmt.Errorf("saga %s: moving from %s to %s: %w", x.rec.ID, from, to, ErrOwnershipLost)
	}
	x.rec.State = to
	switch to {
	case StateDone:
		e.stats.done.Add(1)
	case StateUnwound:
		e.stats.unwound.Add(1)
	case StateStuck:
		e.stats.stuck.Add(1)
	}
	return nil
}

// persist retries a log write until it succeeds or the engine stops: a saga
// whose progress cannot be logged must not progress.
func (e *Engine) persist(x *execution, what string, write func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		err := write(e.runCtx)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("saga %s: %s: %w", x.rec.ID, what, err)
		}
		if e.runCtx.Err() != nil {
			return fmt.Errorf("saga %s: %s: %w", x.rec.ID, what, ErrStopped)
		}
		delay := e.storeBackoff.Delay(attempt)
		x.log.Warn("saga log write failed; retrying", zap.String("write", what), zap.Error(err), zap.Duration("retry_in", delay))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-e.runCtx.Done():
			t.Stop()
			return fmt.Errorf("saga %s: %s: %w", x.rec.ID, what, ErrStopped)
		}
	}
}
