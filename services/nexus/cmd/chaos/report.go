package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rackplane/rackplane/services/racktest/chaos"
)

// summary is what a run found.
type summary struct {
	seed     uint64
	duration time.Duration
	tally    map[chaos.Kind]map[string]int
	faults   map[faultKind]int
	// timeline is each fault, when it began and how long it lasted.
	timeline []string
	// failovers are the db-failover faults as measured.
	failovers []failover
	// reassigned says what became of the expunged replica's sagas.
	reassigned string
	// harness are failures of the harness itself (a fault it could not
	// inject or heal): the run proves nothing then.
	harness []string
	// answers are answers the product should not give.
	answers    []string
	check      chaos.Result
	checkErr   error
	checkTime  time.Duration
	verdicts   []verdict
	historyOut string
}

// verify settles the rack, checks the invariants and runs the
// linearizability check.
func (h *harness) verify(ctx context.Context) *summary {
	s := &summary{seed: h.o.seed, duration: h.o.duration, tally: h.history.Tally()}
	h.faults.mu.Lock()
	s.faults, s.timeline = h.faults.counts, slices.Clone(h.faults.events)
	if h.faults.failure != nil {
		s.harness = append(s.harness, "fault injection: "+h.faults.failure.Error())
	}
	h.faults.mu.Unlock()
	h.say("waiting for the rack to settle (at most %s)", h.o.settleTimeout)
	began := time.Now()
	settled, present := h.settle(ctx)
	h.say("settle: %s", time.Since(began).Round(time.Millisecond))
	s.verdicts = append(append([]verdict{settled}, present...), h.gens.verdict(), h.twice.verdict())
	s.reassigned = h.reassigned(ctx)
	if slices.Contains(h.o.faults, faultDBFailover) {
		s.verdicts = append(s.verdicts, h.failoverVerdicts(ctx)...)
	}
	h.mu.Lock()
	s.answers = slices.Clone(h.answers)
	s.failovers = slices.Clone(h.failovers)
	h.mu.Unlock()
	h.say("checking the history of %d calls", s.calls())
	began = time.Now()
	s.check, s.checkErr = chaos.Check(h.history, h.o.checkTimeout, h.o.out)
	s.checkTime = time.Since(began)
	if s.checkErr == nil && s.failed() {
		// The history is linearizable, but the run failed: keep it for
		// reading anyway.
		s.historyOut = filepath.Join(h.o.out, chaos.HistoryFileName)
		if err := h.history.WriteFile(s.historyOut); err != nil {
			s.harness = append(s.harness, "writing the history: "+err.Error())
		}
	}
	return s
}

// calls is how many calls were recorded.
func (s *summary) calls() int {
	n := 0
	for _, byOutcome := range s.tally {
		for _, c := range byOutcome {
			n += c
		}
	}
	return n
}

func (s *summary) failed() bool { return len(s.violations()) > 0 }

// violations are one line per failed verdict.
func (s *summary) violations() []string {
	out := slices.Clone(s.harness)
	if len(s.answers) > 0 {
		out = append(out, fmt.Sprintf("%d malformed answers", len(s.answers)))
	}
	if s.checkErr != nil {
		out = append(out, s.checkErr.Error())
	}
	for _, v := range s.verdicts {
		if len(v.problems) > 0 {
			out = append(out, fmt.Sprintf("%s: %d violations", v.name, len(v.problems)))
		}
	}
	if s.historyOut != "" && len(out) > 0 {
		out = append(out, "history: "+s.historyOut)
	}
	return out
}

// print writes the summary.
func (s *summary) print(w io.Writer) {
	fmt.Fprintf(w, "\nR1 chaos run, seed %d, %s of calls\n", s.seed, s.duration)
	fmt.Fprintf(w, "\nOperations (ok / refused / indeterminate):\n")
	for _, k := range allKinds {
		c := s.tally[k]
		fmt.Fprintf(w, "  %-16s %6d %6d %6d\n", k, c["ok"], c["refused"], c["indeterminate"])
	}
	fmt.Fprintf(w, "  %-16s %6d calls\n", "total", s.calls())
	fmt.Fprintf(w, "\nFaults injected:\n")
	for _, k := range append(slices.Clone(knownFaults), faultExpunge) {
		fmt.Fprintf(w, "  %-16s %d\n", k, s.faults[k])
	}
	for _, e := range s.timeline {
		fmt.Fprintf(w, "    %s\n", e)
	}
	if s.reassigned != "" {
		fmt.Fprintf(w, "  %s\n", s.reassigned)
	}
	for i, f := range s.failovers {
		fmt.Fprintf(w, "  database failover %d: %s\n", i+1, f)
	}
	fmt.Fprintf(w, "\nLinearizability (R1): ")
	switch {
	case s.checkErr != nil:
		fmt.Fprintf(w, "FAIL in %s: %v\n", s.checkTime.Round(time.Millisecond), s.checkErr)
	default:
		fmt.Fprintf(w, "ok in %s: %d calls (%d indeterminate) as %d operations on %d instances\n",
			s.checkTime.Round(time.Millisecond), s.check.Calls, s.check.Indeterminate, s.check.Operations, s.check.Instances)
	}
	fmt.Fprintf(w, "\nInvariants:\n")
	for _, v := range s.verdicts {
		if len(v.problems) == 0 {
			fmt.Fprintf(w, "  ok    %s\n", v.name)
			continue
		}
		fmt.Fprintf(w, "  FAIL  %s:\n", v.name)
		for _, p := range v.problems[:min(len(v.problems), 20)] {
			fmt.Fprintf(w, "          %s\n", p)
		}
		if len(v.problems) > 20 {
			fmt.Fprintf(w, "          … and %d more\n", len(v.problems)-20)
		}
	}
	for _, a := range s.answers {
		fmt.Fprintf(w, "  FAIL  malformed answer: %s\n", a)
	}
	for _, p := range s.harness {
		fmt.Fprintf(w, "  FAIL  harness: %s\n", p)
	}
	if s.historyOut != "" {
		fmt.Fprintf(w, "\nHistory: %s\n", s.historyOut)
	}
	verdict := "PASS"
	if s.failed() {
		verdict = "FAIL: " + strings.Join(s.violations(), "; ")
	}
	fmt.Fprintf(w, "\n%s (replay: STRESS_SEED=%d)\n", verdict, s.seed)
}
