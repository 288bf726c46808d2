package chaos

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Kind is the REST call a client made.
type Kind string

const (
	KindStart          Kind = "start"           // POST /v1/instances/{instance}/start
	KindStop           Kind = "stop"            // POST /v1/instances/{instance}/stop
	KindReboot         Kind = "reboot"          // POST /v1/instances/{instance}/reboot
	KindForceTerminate Kind = "force-terminate" // POST /v1/instances/{instance}/force-terminate
	KindMigrate        Kind = "migrate"         // POST /v1/instances/{instance}/migrate
	KindView           Kind = "view"            // GET /v1/instances/{instance}
	KindList           Kind = "list"            // GET /v1/instances?project=
)

// mutates says whether calls of kind change the instance.
func (k Kind) mutates() bool {
	_, ok := effects[k]
	return ok
}

func (k Kind) valid() bool { return k.mutates() || k == KindView || k == KindList }

// Tracked is an instance the history is about, as the harness saw it
// before any client called it.
type Tracked struct {
	Instance string `json:"instance"`
	// At is when it was seen, in nanoseconds since the history began.
	At       int64  `json:"at_ns"`
	RunState string `json:"run_state"`
	// Reincarnates: its auto_restart_policy lets nexus restart it when it
	// fails (N8).
	Reincarnates bool `json:"reincarnates"`
}

// Operation is one client call as the client saw it. Times are
// nanoseconds on a monotonic clock since the history began.
type Operation struct {
	Client int  `json:"client"`
	Kind   Kind `json:"kind"`
	// Instance is the id of the instance called; empty for a list.
	Instance string `json:"instance,omitempty"`
	Invoke   int64  `json:"invoke_ns"`
	// Returned is false for a call that had no answer when the history
	// was read: it is indeterminate.
	Returned bool  `json:"returned"`
	Return   int64 `json:"return_ns,omitempty"`
	// Status is the HTTP status; 0 when no answer came (a timeout or a
	// transport error, in Error).
	Status int `json:"status,omitempty"`
	// RunState is the run_state of the instance a 2xx answer carried.
	RunState string `json:"run_state,omitempty"`
	// Items are a list's run_state per instance id.
	Items map[string]string `json:"items,omitempty"`
	// Error is the transport error, or the Oxide error of a refusal.
	Error string `json:"error,omitempty"`
}

// History records client calls; it is safe for any number of goroutines.
type History struct {
	epoch time.Time

	mu      sync.Mutex
	tracked []Tracked
	ops     []Operation
}

// NewHistory begins a history now.
func NewHistory() *History { return &History{epoch: time.Now()} }

// now reads the monotonic clock (time.Since uses it).
func (h *History) now() int64 { return time.Since(h.epoch).Nanoseconds() }

// Track adds an instance to the history, with the run_state the harness
// saw and whether its policy lets nexus restart it when it fails. It comes
// before any call of the instance, and the instance must be settled then:
// no call of it in flight, none it had is still to take effect.
func (h *History) Track(instance, runState string, reincarnates bool) error {
	if instance == "" {
		return errors.New("track: instance: must be an instance id")
	}
	if _, ok := parseRunState(runState); !ok {
		return fmt.Errorf("track: run_state: %q is not one the model starts from (one of %v)", runState, runStateNames)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.tracked {
		if t.Instance == instance {
			return fmt.Errorf("track: instance %s is tracked already", instance)
		}
	}
	h.tracked = append(h.tracked, Tracked{Instance: instance, At: h.now(), RunState: runState, Reincarnates: reincarnates})
	return nil
}

// Call is a call in flight; Answered or Failed completes it. A call never
// completed counts as indeterminate.
type Call struct {
	h *History
	i int
}

// Invoke records that client is calling kind on instance (empty for a
// list), now.
func (h *History) Invoke(client int, kind Kind, instance string) *Call {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, Operation{Client: client, Kind: kind, Instance: instance, Invoke: h.now()})
	return &Call{h: h, i: len(h.ops) - 1}
}

// Answered records the HTTP answer: its status and, for a 2xx, the
// run_state of the instance in its body (of each item, for a list). It
// returns an error for a 2xx body that says no run_state; the call is
// recorded anyway, with nothing read from the body.
func (c *Call) Answered(status int, body []byte) error {
	op := Operation{Status: status}
	var err error
	if outcomeOf(status) == outcomeOK {
		err = readRunStates(c.kind(), body, &op)
	} else {
		op.Error = oxideError(body)
	}
	c.complete(op)
	return err
}

// Failed records a call that got no answer: a timeout or a transport
// error.
func (c *Call) Failed(err error) { c.complete(Operation{Error: err.Error()}) }

func (c *Call) kind() Kind {
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	return c.h.ops[c.i].Kind
}

func (c *Call) complete(answer Operation) {
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	op := &c.h.ops[c.i]
	op.Returned, op.Return = true, c.h.now()
	op.Status, op.RunState, op.Items, op.Error = answer.Status, answer.RunState, answer.Items, answer.Error
}

// readRunStates reads the run states a 2xx answer of kind carries into op.
func readRunStates(kind Kind, body []byte, op *Operation) error {
	if kind == KindList {
		var page struct {
			Items []struct {
				ID       string `json:"id"`
				RunState string `json:"run_state"`
			} `json:"items"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			op.Error = "unreadable list: " + err.Error()
			return fmt.Errorf("%s answered %d with %s", kind, op.Status, op.Error)
		}
		op.Items = make(map[string]string, len(page.Items))
		for _, it := range page.Items {
			op.Items[it.ID] = it.RunState
		}
		return nil
	}
	var inst struct {
		RunState string `json:"run_state"`
	}
	if err := json.Unmarshal(body, &inst); err != nil || inst.RunState == "" {
		op.Error = fmt.Sprintf("an answer with no run_state (%v)", err)
		return fmt.Errorf("%s answered %d with %s", kind, op.Status, op.Error)
	}
	op.RunState = inst.RunState
	return nil
}

// oxideError is "error_code: message" of an Oxide error body, for reading
// a failed history; the body itself when it is not one.
func oxideError(body []byte) string {
	var e struct {
		ErrorCode string `json:"error_code"`
		Message   string `json:"message"`
	}
	if json.Unmarshal(body, &e) != nil || e.ErrorCode == "" {
		return string(body)
	}
	return e.ErrorCode + ": " + e.Message
}

// historyFile is a history as written for reading after a failed check.
type historyFile struct {
	Instances []Tracked   `json:"instances"`
	Calls     []Operation `json:"calls"`
}

// snapshot copies what was recorded so far.
func (h *History) snapshot() historyFile {
	h.mu.Lock()
	defer h.mu.Unlock()
	return historyFile{Instances: append([]Tracked(nil), h.tracked...), Calls: append([]Operation(nil), h.ops...)}
}

// WriteFile writes the history as JSON to path; ReadHistory reads it back.
func (h *History) WriteFile(path string) error {
	data, err := json.MarshalIndent(h.snapshot(), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// ReadHistory reads a history WriteFile wrote, to check it again; it
// records nothing more.
func ReadHistory(path string) (*History, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f historyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("history %s: %w", path, err)
	}
	return &History{tracked: f.Instances, ops: f.Calls}, nil
}
