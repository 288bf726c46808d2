package saga

import (
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/backoff"
)

// Hooks are called around each node, in the saga's goroutine, so a test can
// block there to stand for a crash at that exact point. Nil hooks are
// skipped.
type Hooks struct {
	// BeforeNode runs once the node's "started" event is durable and
	// before its action runs.
	BeforeNode func(sagaID uuid.UUID, node string)
	// AfterNode runs once the action returned and before its outcome is
	// logged: blocking here leaves an action that took effect unlogged.
	AfterNode func(sagaID uuid.UUID, node string)
	// BeforeUndo and AfterUndo are the same around a node's undo.
	BeforeUndo func(sagaID uuid.UUID, node string)
	AfterUndo  func(sagaID uuid.UUID, node string)
}

// Option configures an Engine.
type Option func(*Engine)

// WithHooks installs test hooks.
func WithHooks(h Hooks) Option { return func(e *Engine) { e.hooks = h } }

// WithUndoRetry sets how many times in all an undo is tried, with policy's
// delays between tries, before its saga is declared stuck.
func WithUndoRetry(attempts int, policy backoff.Policy) Option {
	return func(e *Engine) { e.undoAttempts, e.undoBackoff = max(attempts, 1), policy }
}

// WithUndoRetryWhile keeps retrying an undo, with the same delays and
// without counting against WithUndoRetry's tries, for as long as its error
// is one transient says will pass (a sled that does not answer now) and
// for at most bound from the undo's first failure: an undo that needs a
// sled back is not a failed undo while the sled is merely away, and
// declaring its saga stuck then would leave it for an operator after a
// fault that healed by itself. After bound the saga is stuck as usual.
func WithUndoRetryWhile(transient func(error) bool, bound time.Duration) Option {
	return func(e *Engine) { e.undoTransient, e.undoTransientBound = transient, bound }
}

// WithAmbiguousActionErrors names the action errors that do not say
// whether the action took effect: a database that failed over or was cut
// off while committing the action's write. Such a failure is logged as one
// after effect, so that unwinding runs the node's own undo too, as it does
// after a crash mid-action; without it, a committed write (a VMM row, say)
// would outlive its saga with nothing to undo it.
func WithAmbiguousActionErrors(ambiguous func(error) bool) Option {
	return func(e *Engine) { e.ambiguous = ambiguous }
}

// WithStoreRetry sets the delays between retries of a failed database
// write. The engine retries such writes until it is shut down, because a
// saga whose progress cannot be logged must not progress.
func WithStoreRetry(policy backoff.Policy) Option {
	return func(e *Engine) { e.storeBackoff = policy }
}

// WithRepeat runs every action and every undo n times in a row (the last
// outcome counts), the way omicron's saga tests prove that actions and
// undos are idempotent. For tests only.
func WithRepeat(n int) Option { return func(e *Engine) { e.repeat = max(n, 1) } }

// WithInjectedErrors makes actions fail for a test: after each action has
// run (and taken effect), inject is asked about its template and node, and
// an error it returns is the action's failure. The saga unwinds, and the
// node's own undo runs too, since its action took effect: the way an action
// fails whose side effect landed before its own error (a lost answer, a
// database error after a sled call). Omicron's saga tests inject errors
// the same way, node by node, to prove that every node unwinds.
func WithInjectedErrors(inject func(template, node string) error) Option {
	return func(e *Engine) { e.injectError = inject }
}

// WithClock replaces time.Now for the timestamps in the log.
func WithClock(now func() time.Time) Option { return func(e *Engine) { e.now = now } }

var (
	defaultUndoBackoff  = backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}
	defaultStoreBackoff = backoff.Policy{Initial: 50 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}
)

const defaultUndoAttempts = 5
