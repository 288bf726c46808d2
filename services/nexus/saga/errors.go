package saga

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
)

var (
	// ErrNotFound means there is no saga with that id.
	ErrNotFound = errors.New("no such saga")
	// ErrUnknownTemplate means no template of that name is registered.
	ErrUnknownTemplate = errors.New("unknown saga template")
	// ErrStopped means the engine is shutting down: it starts no saga,
	// and a saga it was running stopped at a durable point, to be resumed
	// by Recover.
	ErrStopped = errors.New("saga engine stopped")
	// ErrNotRunning means Wait was asked about an unfinished saga this
	// engine is not running: another nexus owns it, or it awaits Recover.
	ErrNotRunning = errors.New("saga is unfinished and not running in this engine")
	// ErrOwnershipLost means the saga's row changed under the engine
	// (another owner, or another state), so the engine stopped driving it.
	ErrOwnershipLost = errors.New("saga changed under its engine")
	// ErrNoOutput means a node has not succeeded, or returned no output.
	ErrNoOutput = errors.New("saga node has no output")
)

// ActionError is why a saga unwound: the action of Node failed. Err is the
// action's own error when the saga ran in this process, so callers can
// match it with errors.Is/As; for a saga resumed after a restart only its
// text survives.
type ActionError struct {
	SagaID uuid.UUID
	Node   string
	Err    error
}

func (e *ActionError) Error() string {
	return fmt.Sprintf("saga %s: action %q failed: %v", e.SagaID, e.Node, e.Err)
}

func (e *ActionError) Unwrap() error { return e.Err }

// StuckError is a saga that could not finish unwinding: the undo of Node
// kept failing after Cause made it unwind. It matches both errors with
// errors.Is/As, so a caller testing for an ActionError finds Cause.
type StuckError struct {
	SagaID uuid.UUID
	Node   string
	Err    error
	Cause  *ActionError
}

func (e *StuckError) Error() string {
	return fmt.Sprintf("saga %s is stuck: undo of %q failed: %v (unwinding because %v)", e.SagaID, e.Node, e.Err, e.Cause)
}

func (e *StuckError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Cause}
}
