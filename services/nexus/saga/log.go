package saga

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// sagaLog is a saga's log indexed by node and event type: replaying it
// needs only which events each node has, never their order.
type sagaLog map[string]map[EventType]Event

func indexLog(events []Event) sagaLog {
	l := make(sagaLog)
	for _, ev := range events {
		l.add(ev)
	}
	return l
}

func (l sagaLog) add(ev Event) {
	if l[ev.Node] == nil {
		l[ev.Node] = make(map[EventType]Event)
	}
	l[ev.Node][ev.Type] = ev
}

func (l sagaLog) has(node string, t EventType) bool {
	_, ok := l[node][t]
	return ok
}

// effectMark is logged as the output of a failed action that may
// have taken effect all the same: its node had been started before, by a
// run that ended without an outcome (a crash, or a shutdown that cut the
// action short), or a test injected the failure after the action ran
// (WithInjectedErrors). The node is then undone like one that succeeded.
// Being in the failed event itself, the mark is as durable as the failure.
// (Logs written before the second case existed carry the same meaning
// under its old key.)
var effectMark = json.RawMessage(`{"earlier_run_interrupted":true}`)

// failedAfterEffect reports whether node failed in a way that may have
// taken effect (see effectMark).
func (l sagaLog) failedAfterEffect(node string) bool {
	ev, ok := l[node][EventFailed]
	return ok && len(ev.Output) > 0
}

func (l sagaLog) outputs() map[string]json.RawMessage {
	out := make(map[string]json.RawMessage)
	for node, events := range l {
		if ev, ok := events[EventSucceeded]; ok && ev.Output != nil {
			out[node] = ev.Output
		}
	}
	return out
}

// cause rebuilds the action error that made a saga unwind from its text.
func (l sagaLog) cause(id uuid.UUID) *ActionError {
	for node, events := range l {
		if ev, ok := events[EventFailed]; ok {
			return &ActionError{SagaID: id, Node: node, Err: errors.New(ev.Error)}
		}
	}
	return nil
}

func (l sagaLog) stuck(id uuid.UUID) *StuckError {
	for node, events := range l {
		if ev, ok := events[EventUndoFailed]; ok {
			return &StuckError{SagaID: id, Node: node, Err: errors.New(ev.Error), Cause: l.cause(id)}
		}
	}
	return &StuckError{SagaID: id, Err: errors.New("no failed undo in the log"), Cause: l.cause(id)}
}

// outcome is how a saga stands according to the database alone.
func outcome(rec Record, events []Event) (Result, error) {
	l := indexLog(events)
	res := Result{ID: rec.ID, Template: rec.Template, State: rec.State, Outputs: l.outputs()}
	switch rec.State {
	case StateDone:
		return res, nil
	case StateUnwound:
		if cause := l.cause(rec.ID); cause != nil {
			return res, cause
		}
		return res, &ActionError{SagaID: rec.ID, Err: errors.New("no failed action in the log")}
	case StateStuck:
		return res, l.stuck(rec.ID)
	}
	return res, fmt.Errorf("saga %s is %s: %w", rec.ID, rec.State, ErrNotRunning)
}
