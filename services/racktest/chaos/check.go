package chaos

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Files a failed check writes into the directory its caller gives.
const (
	HistoryFileName       = "r1-history.json"
	VisualizationFileName = "r1-linearizability.html"
)

// Result is what Check found.
type Result struct {
	Outcome porcupine.CheckResult
	// Calls is the number of client calls checked; Indeterminate of them
	// had no definite answer. Operations is the number of porcupine
	// operations they became.
	Calls, Indeterminate, Operations int
	Instances                        int
	// Violating are the instances whose history is not linearizable (or
	// whose check did not finish).
	Violating []string
	// HistoryFile and VisualizationFile are written when Outcome is not
	// Ok.
	HistoryFile, VisualizationFile string
}

// Check checks that h is linearizable against the instance model (R1),
// giving porcupine timeout (0: none). When it is not, or the check did not
// finish, it writes the history and porcupine's visualization into dir and
// returns an error naming both.
func Check(h *History, timeout time.Duration, dir string) (Result, error) {
	if dir == "" {
		return Result{}, errors.New("check: dir: required, where a failed check writes its history and visualization")
	}
	file := h.snapshot()
	ops, res, err := operations(file)
	if err != nil {
		return res, err
	}
	outcome, info := porcupine.CheckOperationsVerbose(instanceModel, ops, timeout)
	res.Outcome, res.Operations = outcome, len(ops)
	if outcome == porcupine.Ok {
		return res, nil
	}
	res.Violating = violating(instanceModel.Partition(ops), info)
	res.HistoryFile = filepath.Join(dir, HistoryFileName)
	res.VisualizationFile = filepath.Join(dir, VisualizationFileName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	if err := h.WriteFile(res.HistoryFile); err != nil {
		return res, fmt.Errorf("writing the history of a failed check: %w", err)
	}
	if err := porcupine.VisualizePath(instanceModel, info, res.VisualizationFile); err != nil {
		return res, fmt.Errorf("writing the visualization of a failed check: %w", err)
	}
	what := "is not linearizable"
	if outcome == porcupine.Unknown {
		what = fmt.Sprintf("could not be checked within %s", timeout)
	}
	return res, fmt.Errorf("R1: the history of %d calls %s against the instance model (N4, N7, F1-F12); instances %s; "+
		"history: %s; visualization: %s", res.Calls, what, strings.Join(res.Violating, ", "),
		res.HistoryFile, res.VisualizationFile)
}

// violating are the instances of the partitions porcupine could not
// linearize whole.
func violating(partitions [][]porcupine.Operation, info porcupine.LinearizationInfo) []string {
	var out []string
	partials := info.PartialLinearizations()
	for i, p := range partitions {
		longest := 0
		if i < len(partials) {
			for _, l := range partials[i] {
				longest = max(longest, len(l))
			}
		}
		if longest < len(p) {
			out = append(out, p[0].Input.(input).Instance)
		}
	}
	return out
}

// input is a porcupine operation's input; its output is the run_state it
// read (empty when it read none).
type input struct {
	Instance string
	Kind     Kind
	// Setup starts the instance's model from Initial.
	Setup   bool
	Initial Tracked
	// Answer is the read of the instance a mutating call's 2xx answer
	// carried: a view within the call's interval.
	Answer  bool
	Outcome outcome
	Status  int
}

// operations turns a history into porcupine operations: one setup per
// tracked instance, one view per run_state read, and one effect per
// mutating call; an indeterminate call's effect is a token added when it
// was invoked (state.go).
func operations(f historyFile) ([]porcupine.Operation, Result, error) {
	res := Result{Calls: len(f.Calls), Instances: len(f.Instances)}
	trackedAt := map[string]int64{}
	harness := 0
	for _, t := range f.Instances {
		trackedAt[t.Instance] = t.At
	}
	for i, c := range f.Calls {
		if !c.Kind.valid() {
			return nil, res, fmt.Errorf("check: call %d: kind %q is none of start, stop, reboot, force-terminate, migrate, view, list", i, c.Kind)
		}
		if at, ok := trackedAt[c.Instance]; c.Kind != KindList && (!ok || at > c.Invoke) {
			return nil, res, fmt.Errorf("check: call %d (%s): instance %q was not tracked when the call was invoked", i, c.Kind, c.Instance)
		}
		harness = max(harness, c.Client+1)
	}
	var ops []porcupine.Operation
	for _, t := range f.Instances {
		ops = append(ops, porcupine.Operation{ClientId: harness, Input: input{Instance: t.Instance, Setup: true, Initial: t},
			Call: t.At, Return: t.At, Output: "", Metadata: "the harness tracked it"})
	}
	for i, c := range f.Calls {
		o := outcomeIndeterminate
		if c.Returned {
			o = outcomeOf(c.Status)
		}
		if o == outcomeIndeterminate {
			res.Indeterminate++
		}
		ops = append(ops, callOperations(i, c, o, f.Instances)...)
	}
	return ops, res, nil
}

// callOperations are the porcupine operations of call i.
func callOperations(i int, c Operation, o outcome, tracked []Tracked) []porcupine.Operation {
	about := fmt.Sprintf("call %d by client %d, invoked at %d ns: no answer", i, c.Client, c.Invoke)
	if c.Returned {
		about = fmt.Sprintf("call %d by client %d, invoked at %d ns, answered at %d ns: status %d", i, c.Client, c.Invoke, c.Return, c.Status)
	}
	if c.Error != "" {
		about += ": " + c.Error
	}
	op := func(in input, ret int64, runState string) porcupine.Operation {
		return porcupine.Operation{ClientId: c.Client, Input: in, Call: c.Invoke, Return: ret, Output: runState, Metadata: about}
	}
	read := input{Instance: c.Instance, Kind: c.Kind, Outcome: o, Status: c.Status}
	switch {
	case o == outcomeIndeterminate && !c.Kind.mutates():
		return nil // a read with no answer tells nothing
	case c.Kind == KindList:
		var out []porcupine.Operation
		for _, t := range tracked {
			if t.At > c.Invoke {
				continue // the model knows nothing of it before
			}
			// A refused list is a refused view of every instance.
			if runState, ok := c.Items[t.Instance]; ok || o == outcomeRefused {
				read.Instance = t.Instance
				out = append(out, op(read, c.Return, runState))
			}
		}
		return out
	case c.Kind == KindView:
		return []porcupine.Operation{op(read, c.Return, c.RunState)}
	case o == outcomeIndeterminate:
		return []porcupine.Operation{op(read, c.Invoke, "")}
	}
	out := []porcupine.Operation{op(read, c.Return, c.RunState)}
	if o == outcomeOK && c.RunState != "" {
		answer := read
		answer.Answer = true
		out = append(out, op(answer, c.Return, c.RunState))
	}
	return out
}

// initial are the situations an instance seen in runState may be in: its
// wish is only known while a VMM runs for it.
func initial(runState string) set {
	rs, _ := parseRunState(runState)
	out := set{}.with(situation{rs: rs})
	if rs == rsStopping || rs == rsStopped || rs == rsFailed {
		out = out.with(situation{rs: rs, stopWanted: true})
	}
	return out
}

func step(st state, in input, runState string) (bool, state) {
	if in.Setup {
		if st.may != "" {
			return false, st
		}
		may := possibilities{}
		initial(in.Initial.RunState).each(func(x situation) { may.add(x, tokens{}) })
		return settle(may, in.Initial.Reincarnates)
	}
	if st.may == "" {
		return false, st
	}
	may := decode(st.may)
	switch {
	case in.Outcome == outcomeRefused && !slices.Contains(refusals[in.Kind], in.Status):
		return false, st
	case in.Answer || !in.Kind.mutates():
		rs, ok := parseRunState(runState)
		if !ok {
			return false, st
		}
		may = may.mapEach(func(x situation) set {
			if x.rs == rs {
				return set{}.with(x)
			}
			return set{}
		})
	case in.Kind == KindForceTerminate && in.Outcome == outcomeOK && (runState == "stopping" || runState == "migrating"):
		return false, st // F1: never an unsettled answer
	case in.Outcome == outcomeIndeterminate:
		k := tokenIndex(in.Kind)
		more := possibilities{}
		for x, t := range may {
			more.add(x, t.plus(k))
		}
		may = more
	default:
		may = may.mapEach(func(x situation) set { return effects[in.Kind](x, in.Outcome) })
	}
	return settle(may, st.reincarnates)
}

// settle closes may and makes it porcupine's state; false when nothing is
// possible.
func settle(may possibilities, reincarnates bool) (bool, state) {
	may.close(reincarnates)
	return len(may) > 0, state{may: may.encode(), reincarnates: reincarnates}
}

func describeOperation(in input, runState string) string {
	switch {
	case in.Setup:
		policy := "never restarted"
		if in.Initial.Reincarnates {
			policy = "reincarnates"
		}
		return fmt.Sprintf("tracked: %s (%s)", in.Initial.RunState, policy)
	case in.Answer:
		return fmt.Sprintf("%s answered %s", in.Kind, runState)
	case in.Outcome == outcomeRefused && !slices.Contains(refusals[in.Kind], in.Status):
		return fmt.Sprintf("%s: %d (never answered for a tracked instance)", in.Kind, in.Status)
	case !in.Kind.mutates():
		return fmt.Sprintf("%s: %s", in.Kind, runState)
	case in.Outcome == outcomeIndeterminate && in.Status == 0:
		return fmt.Sprintf("%s: no answer (indeterminate)", in.Kind)
	case in.Outcome == outcomeIndeterminate:
		return fmt.Sprintf("%s: %d (indeterminate)", in.Kind, in.Status)
	}
	return fmt.Sprintf("%s: %d", in.Kind, in.Status)
}

// instanceModel is the porcupine model of one instance, partitioned by
// instance: instances do not affect each other's state machines.
var instanceModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		return partition(history, func(op porcupine.Operation) string { return op.Input.(input).Instance })
	},
	PartitionEvent: partitionEvents,
	Init:           func() any { return state{} },
	Step: func(st, in, out any) (bool, any) {
		return step(st.(state), in.(input), out.(string))
	},
	Equal:             func(a, b any) bool { return a.(state) == b.(state) },
	Hash:              func(st any) uint64 { return st.(state).hash() },
	DescribeOperation: func(in, out any) string { return describeOperation(in.(input), out.(string)) },
	DescribeState: func(st any) string {
		s := st.(state)
		if s.may == "" {
			return "untracked"
		}
		return decode(s.may).String()
	},
	DescribeOperationMetadata: func(info any) string {
		if info == nil {
			return ""
		}
		return info.(string)
	},
}

// partition groups items by key, in the order keys first appear.
func partition[T any](items []T, key func(T) string) [][]T {
	index := map[string]int{}
	var out [][]T
	for _, it := range items {
		k := key(it)
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], it)
	}
	return out
}

// partitionEvents partitions events by instance: a return event belongs
// where its call does.
func partitionEvents(history []porcupine.Event) [][]porcupine.Event {
	instanceOf := map[int]string{}
	for _, e := range history {
		if e.Kind == porcupine.CallEvent {
			instanceOf[e.Id] = e.Value.(input).Instance
		}
	}
	return partition(history, func(e porcupine.Event) string { return instanceOf[e.Id] })
}
