package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/backoff"
)

// Engine runs sagas for one nexus and logs their progress in a Store.
type Engine struct {
	store   Store
	nexusID uuid.UUID
	log     *zap.Logger

	hooks        Hooks
	undoAttempts int
	// undoTransient and undoTransientBound: see WithUndoRetryWhile.
	undoTransient      func(error) bool
	undoTransientBound time.Duration
	undoBackoff        backoff.Policy
	// ambiguous: see WithAmbiguousActionErrors.
	ambiguous    func(error) bool
	storeBackoff backoff.Policy
	repeat       int
	injectError  func(template, node string) error
	now          func() time.Time

	// runCtx is the context of every action, undo and log write. It
	// outlives the requests that start sagas, and ends only when
	// Shutdown gives up waiting.
	runCtx    context.Context
	cancelRun context.CancelFunc
	// stopping closes when Shutdown begins: sagas then stop at their next
	// durable point instead of starting another node.
	stopping chan struct{}

	mu        sync.Mutex
	templates map[string]Template
	running   map[uuid.UUID]*execution
	closed    bool
	inFlight  sync.WaitGroup

	stats struct {
		running, started, recovered, done, unwound, stuck atomic.Int64
	}
}

// New returns an engine that runs sagas owned by nexusID. Register the
// templates, then call Recover, before starting sagas.
func New(store Store, nexusID uuid.UUID, log *zap.Logger, opts ...Option) *Engine {
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{
		store: store, nexusID: nexusID, log: log,
		undoAttempts: defaultUndoAttempts, undoBackoff: defaultUndoBackoff, storeBackoff: defaultStoreBackoff,
		repeat: 1, now: time.Now,
		runCtx: ctx, cancelRun: cancel, stopping: make(chan struct{}),
		templates: make(map[string]Template), running: make(map[uuid.UUID]*execution),
	}
	for _, opt := range opts {
		opt(e)
	}
	return e
}

// Register makes a template startable and recoverable by its name.
func (e *Engine) Register(t Template) error {
	if err := t.validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, dup := e.templates[t.Name]; dup {
		return fmt.Errorf("saga template %q is registered twice", t.Name)
	}
	e.templates[t.Name] = t
	return nil
}

func (e *Engine) template(name string) (Template, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.templates[name]
	return t, ok
}

// Result is how a saga ended, or where it stands.
type Result struct {
	ID       uuid.UUID
	Template string
	State    State
	// Outputs holds the JSON output of every node that succeeded and
	// returned one.
	Outputs map[string]json.RawMessage
}

// Output decodes a node's output into v; ErrNoOutput when it has none.
func (r Result) Output(node string, v any) error { return decodeOutput(r.ID, r.Outputs, node, v) }

// Start creates a saga and runs it in the background. ctx bounds only the
// creation: the saga itself runs to its end even if the caller goes away,
// so a cancelled request never leaves it half done.
func (e *Engine) Start(ctx context.Context, template string, params any) (uuid.UUID, error) {
	x, err := e.start(ctx, template, params)
	if err != nil {
		return uuid.Nil, err
	}
	return x.rec.ID, nil
}

// Run starts a saga and waits for it. The error is nil when it ended done,
// an *ActionError when it unwound, a *StuckError when it got stuck,
// wrapping ErrStopped when the engine shut down first, and ctx's error when
// ctx ended first (the saga carries on).
func (e *Engine) Run(ctx context.Context, template string, params any) (Result, error) {
	x, err := e.start(ctx, template, params)
	if err != nil {
		return Result{}, err
	}
	return x.wait(ctx)
}

func (e *Engine) start(ctx context.Context, name string, params any) (*execution, error) {
	// Admitted before the row exists, so that Shutdown never leaves a
	// saga created but not run by anyone until the next restart.
	if !e.admit() {
		return nil, ErrStopped
	}
	rec, tmpl, err := e.prepare(name, params)
	if err != nil {
		e.inFlight.Done()
		return nil, err
	}
	if err := e.store.SagaCreate(ctx, rec); err != nil {
		// A commit whose answer was lost, as when the database fails over,
		// leaves the row running and owned by this replica all the same;
		// settleCreate runs it if so, and the admission passes to it.
		go e.settleCreate(rec, tmpl)
		return nil, fmt.Errorf("creating saga %q: %w", name, err)
	}
	x, _ := e.newExecution(rec, tmpl, nil)
	e.stats.started.Add(1)
	e.launch(x)
	return x, nil
}

// prepare builds the row of a new saga of template name.
func (e *Engine) prepare(name string, params any) (Record, Template, error) {
	tmpl, ok := e.template(name)
	if !ok {
		return Record{}, Template{}, fmt.Errorf("%w %q", ErrUnknownTemplate, name)
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return Record{}, Template{}, fmt.Errorf("saga %q: encoding params: %w", name, err)
	}
	now := e.now()
	rec := Record{ID: uuid.New(), Template: name, Params: raw, Owner: e.nexusID, State: StateRunning,
		TimeCreated: now, TimeStateChanged: now}
	return rec, tmpl, nil
}

// settleCreate finds out whether an admitted saga whose creation answered
// an error was created after all, and runs it if it was. Until the
// database answers, nobody can tell; when the engine stops first, Recover
// at the next start finds the row if there is one.
func (e *Engine) settleCreate(rec Record, tmpl Template) {
	launched := false
	defer func() {
		if !launched {
			e.inFlight.Done() // the admission is the launched saga's otherwise
		}
	}()
	for attempt := 0; ; attempt++ {
		got, err := e.store.SagaGet(e.runCtx, rec.ID)
		switch {
		case errors.Is(err, ErrNotFound):
			return
		case err == nil:
			if got.Owner != e.nexusID || got.State.Finished() {
				return
			}
			x, err := e.newExecution(got, tmpl, nil)
			if err != nil { // a fresh row has no log to disagree with
				e.log.Error("saga created after all cannot run", zap.Stringer("saga_id", rec.ID), zap.Error(err))
				return
			}
			x.log.Warn("saga created though its creation answered an error; running it")
			e.stats.started.Add(1)
			e.launch(x)
			launched = true
			return
		}
		delay := e.storeBackoff.Delay(attempt)
		e.log.Warn("cannot tell whether a saga was created; asking again", zap.Stringer("saga_id", rec.ID),
			zap.Error(err), zap.Duration("retry_in", delay))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-e.stopping:
			t.Stop()
			return
		}
	}
}

// admit counts a saga about to run so that Shutdown waits for it; false
// once Shutdown has begun.
func (e *Engine) admit() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.inFlight.Add(1)
	return true
}

// launch runs an admitted saga, unless this engine already runs it.
func (e *Engine) launch(x *execution) bool {
	e.mu.Lock()
	if _, dup := e.running[x.rec.ID]; dup {
		e.mu.Unlock()
		e.inFlight.Done()
		return false
	}
	e.running[x.rec.ID] = x
	e.mu.Unlock()
	go e.execute(x)
	return true
}

// Wait waits for a saga this engine runs, or reports how a finished one
// ended; errors as Run's. A saga finished before this process started
// reports its action error by text only. ErrNotRunning for an unfinished
// saga not running here.
func (e *Engine) Wait(ctx context.Context, id uuid.UUID) (Result, error) {
	e.mu.Lock()
	x := e.running[id]
	e.mu.Unlock()
	if x != nil {
		return x.wait(ctx)
	}
	rec, err := e.store.SagaGet(ctx, id)
	if err != nil {
		return Result{}, err
	}
	events, err := e.store.SagaEvents(ctx, id)
	if err != nil {
		return Result{}, err
	}
	return outcome(rec, events)
}

// StuckSaga is a saga an operator has to look at.
type StuckSaga struct {
	Record
	Err *StuckError
}

// Stuck lists every stuck saga in the database, whichever nexus owns it,
// for the operator.
func (e *Engine) Stuck(ctx context.Context) ([]StuckSaga, error) {
	recs, err := e.store.SagaListStuck(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]StuckSaga, 0, len(recs))
	for _, rec := range recs {
		events, err := e.store.SagaEvents(ctx, rec.ID)
		if err != nil {
			return nil, err
		}
		_, err = outcome(rec, events)
		var stuck *StuckError
		errors.As(err, &stuck)
		out = append(out, StuckSaga{Record: rec, Err: stuck})
	}
	return out, nil
}

// Stats counts what this engine did since it was created.
type Stats struct {
	Running   int64 // sagas executing now
	Started   int64
	Recovered int64
	Done      int64
	Unwound   int64
	// Stuck counts the sagas this engine got stuck; Engine.Stuck lists
	// all those in the database.
	Stuck int64
}

// Stats is a snapshot of the counters, for the metrics layer.
func (e *Engine) Stats() Stats {
	s := &e.stats
	return Stats{Running: s.running.Load(), Started: s.started.Load(), Recovered: s.recovered.Load(),
		Done: s.done.Load(), Unwound: s.unwound.Load(), Stuck: s.stuck.Load()}
}

// Shutdown refuses new sagas and waits until each running saga has logged
// the outcome of the node it was running and stopped there; Recover at the
// next start carries on. When ctx ends first, actions see their context
// cancelled, the sagas stop where they are (their last logged event is
// the durable point) and Shutdown returns ctx's error.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.stopping)
	}
	e.mu.Unlock()
	idle := make(chan struct{})
	go func() {
		e.inFlight.Wait()
		close(idle)
	}()
	defer e.cancelRun()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
