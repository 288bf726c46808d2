package chaos

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// script writes a history by hand, with the times of its calls chosen by
// the test rather than read from a clock.
type script struct {
	f historyFile
}

const vm = "b2b8a0a6-9a4a-4a57-8f0d-6c0f0e0c0a01"

// newScript tracks vm, seen in runState at time 0, never reincarnated.
func newScript(runState string) *script {
	s := &script{}
	s.track(vm, runState, false)
	return s
}

func (s *script) track(instance, runState string, reincarnates bool) *script {
	s.f.Instances = append(s.f.Instances, Tracked{Instance: instance, RunState: runState, Reincarnates: reincarnates})
	return s
}

// call records a call of vm answered with status (and run_state, for a
// 2xx) by client over [invoke, ret].
func (s *script) call(client int, kind Kind, invoke, ret int64, status int, runState string) *script {
	s.f.Calls = append(s.f.Calls, Operation{Client: client, Kind: kind, Instance: vm, Invoke: invoke, Return: ret,
		Returned: true, Status: status, RunState: runState})
	return s
}

// noAnswer records a call of vm that timed out at ret.
func (s *script) noAnswer(client int, kind Kind, invoke, ret int64) *script {
	s.f.Calls = append(s.f.Calls, Operation{Client: client, Kind: kind, Instance: vm, Invoke: invoke, Return: ret,
		Returned: true, Error: "context deadline exceeded"})
	return s
}

func (s *script) view(client int, invoke, ret int64, runState string) *script {
	return s.call(client, KindView, invoke, ret, 200, runState)
}

func (s *script) history() *History { return &History{tracked: s.f.Instances, ops: s.f.Calls} }

// check runs Check on the script.
func (s *script) check(t *testing.T) (Result, error) {
	t.Helper()
	return Check(s.history(), 10*time.Second, t.TempDir())
}

// linearizable fails the test unless the script passes the check.
func (s *script) linearizable(t *testing.T) {
	t.Helper()
	if res, err := s.check(t); err != nil || res.Outcome != porcupine.Ok {
		t.Fatalf("want linearizable, got %s: %v", res.Outcome, err)
	}
}

// violation fails the test unless the check finds the script not
// linearizable.
func (s *script) violation(t *testing.T) {
	t.Helper()
	res, err := s.check(t)
	if res.Outcome != porcupine.Illegal || err == nil {
		t.Fatalf("want a violation, got %s: %v", res.Outcome, err)
	}
	if len(res.Violating) != 1 || res.Violating[0] != vm {
		t.Fatalf("violating instances %v, want [%s]", res.Violating, vm)
	}
}
