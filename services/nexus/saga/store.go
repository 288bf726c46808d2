package saga

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// State is where a saga is in its life. Running and unwinding sagas are
// unfinished: their owner resumes them after a restart.
type State string

const (
	StateRunning   State = "running"
	StateUnwinding State = "unwinding"
	StateDone      State = "done"
	StateUnwound   State = "unwound"
	// StateStuck is an unwinding saga whose undo kept failing: an
	// operator has to look at it, nothing resumes it.
	StateStuck State = "stuck"
)

// Finished reports whether no engine will touch a saga in this state again.
func (s State) Finished() bool {
	return s == StateDone || s == StateUnwound || s == StateStuck
}

// EventType is one entry of a node's log.
type EventType string

const (
	EventStarted       EventType = "started"
	EventSucceeded     EventType = "succeeded"
	EventFailed        EventType = "failed"
	EventUndoStarted   EventType = "undo_started"
	EventUndoSucceeded EventType = "undo_succeeded"
	EventUndoFailed    EventType = "undo_failed"
)

// Record is a saga's row: what to run and who runs it.
type Record struct {
	ID       uuid.UUID
	Template string
	Params   json.RawMessage
	// Owner is the nexus that runs the saga and resumes it after a restart.
	Owner            uuid.UUID
	State            State
	TimeCreated      time.Time
	TimeStateChanged time.Time
}

// Event is one line of a saga's log. At most one event of each type is
// stored per node, which is what makes replaying the log unambiguous.
type Event struct {
	SagaID uuid.UUID
	Node   string
	Type   EventType
	// Output is the JSON a succeeded action returned; nil when it
	// returned nil. On a failed event it marks a failure that followed an
	// interrupted run of the same node, whose effect must still be undone.
	Output json.RawMessage
	// Error is the text of a failed action or undo.
	Error string
	Time  time.Time
}

// Store is the persistence the engine needs; nexus's datastore implements
// it. Every method must be safe for concurrent use.
type Store interface {
	// SagaCreate inserts a new saga row.
	SagaCreate(ctx context.Context, r Record) error
	// SagaGet returns a saga's row, or an error wrapping ErrNotFound.
	SagaGet(ctx context.Context, id uuid.UUID) (Record, error)
	// SagaAppendEvent stores e unless the saga already has an event of
	// e.Type for e.Node, in which case it changes nothing and succeeds.
	SagaAppendEvent(ctx context.Context, e Event) error
	// SagaUpdateState moves a saga owned by owner from one state to
	// another: (true, nil) when written, (false, nil) when the saga is
	// not in state from or has another owner, ErrNotFound when there is
	// no such saga.
	SagaUpdateState(ctx context.Context, id, owner uuid.UUID, from, to State, at time.Time) (bool, error)
	// SagaListUnfinished returns the running and unwinding sagas of owner.
	SagaListUnfinished(ctx context.Context, owner uuid.UUID) ([]Record, error)
	// SagaEvents returns a saga's log.
	SagaEvents(ctx context.Context, id uuid.UUID) ([]Event, error)
	// SagaListStuck returns every stuck saga, whoever owns it.
	SagaListStuck(ctx context.Context) ([]Record, error)
}
