package chaos

import (
	"math/bits"
	"strings"
)

// runState is an instance's external state (N4) as the model knows it.
// creating and destroyed are left out: the harness tracks instances once
// created and never deletes them, so seeing either is a violation.
type runState uint8

const (
	rsStarting runState = iota
	rsRunning
	rsRebooting
	rsMigrating
	rsStopping
	rsStopped
	rsFailed
	numRunStates
)

var runStateNames = [numRunStates]string{"starting", "running", "rebooting", "migrating", "stopping", "stopped", "failed"}

func (r runState) String() string { return runStateNames[r] }

// parseRunState is the model's run state named s; false for one the model
// does not hold (creating, destroyed, anything unknown).
func parseRunState(s string) (runState, bool) {
	for i, name := range runStateNames {
		if name == s {
			return runState(i), true
		}
	}
	return 0, false
}

// situation is one state the instance may be in (see the package doc).
type situation struct {
	rs            runState
	stopWanted    bool
	mayUnwind     bool
	rebootPending bool
	// doomed: the saga that may unwind is a start that was refused; it
	// unwinds, and its VMM never ran.
	doomed bool
}

// hasVMM: nexus has a VMM linked to the instance, so a start changes
// nothing (N7). A failed instance has none, unless its VMM shows
// saga_unwound while the start saga that linked it unwinds (N4).
func (s situation) hasVMM() bool { return s.rs != rsStopped && (s.rs != rsFailed || s.mayUnwind) }

func (s situation) index() int {
	i := int(s.rs) * 16
	for bit, fact := range []bool{s.doomed, s.rebootPending, s.mayUnwind, s.stopWanted} {
		if fact {
			i += 1 << bit
		}
	}
	return i
}

func situationAt(i int) situation {
	return situation{rs: runState(i / 16), stopWanted: i&8 != 0, mayUnwind: i&4 != 0, rebootPending: i&2 != 0, doomed: i&1 != 0}
}

// normal is s as nexus would show it: a stop wanted shows as stopping
// while the VMM still runs (N4), and facts that no longer matter are
// dropped, so that equal futures have equal situations.
func (s situation) normal() situation {
	if s.stopWanted && (s.rs == rsStarting || s.rs == rsRunning || s.rs == rsRebooting) {
		s.rs = rsStopping
	}
	s.doomed = s.doomed && s.mayUnwind
	switch {
	case s.rs == rsStopped:
		s.mayUnwind, s.rebootPending, s.doomed = false, false, false
	case s.rs == rsFailed, s.rs == rsStopping, s.stopWanted, s.doomed:
		s.rebootPending = false
	}
	return s
}

func (s situation) String() string {
	facts := []string{"run"}
	if s.stopWanted {
		facts[0] = "stop"
	}
	switch {
	case s.doomed:
		facts = append(facts, "unwinds")
	case s.mayUnwind:
		facts = append(facts, "may unwind")
	}
	if s.rebootPending {
		facts = append(facts, "reboot pending")
	}
	return s.rs.String() + "(" + strings.Join(facts, ", ") + ")"
}

// set is a set of situations, one bit per index.
type set [2]uint64

func (s set) with(x situation) set {
	i := x.normal().index()
	s[i/64] |= 1 << (i % 64)
	return s
}

func (s set) union(t set) set { return set{s[0] | t[0], s[1] | t[1]} }

func (s set) empty() bool { return s == set{} }

func (s set) each(f func(situation)) {
	for w, word := range s {
		for rest := word; rest != 0; rest &= rest - 1 {
			f(situationAt(w*64 + bits.TrailingZeros64(rest)))
		}
	}
}

func (s set) String() string {
	var parts []string
	s.each(func(x situation) { parts = append(parts, x.String()) })
	return "{" + strings.Join(parts, ", ") + "}"
}

// background is where x can go with no client call (package doc; each case
// names the SPEC behaviour it follows).
func background(x situation, reincarnates bool) set {
	var out set
	move := func(rs runState) {
		y := x
		y.rs = rs
		out = out.with(y)
	}
	switch x.rs {
	case rsStarting:
		if !x.doomed {
			move(rsRunning) // N4: the VMM reported running
		}
	case rsRebooting:
		move(rsRunning) // N4: reboot done
	case rsMigrating:
		move(rsRunning) // N6: resolved; stopping instead when a stop is wanted (normal)
	case rsStopping:
		out = out.with(situation{rs: rsFailed, stopWanted: x.stopWanted}) // N6: a failed VMM unlinked
		if x.stopWanted {
			out = out.with(situation{rs: rsStopped, stopWanted: true}) // N6, N13
		}
	case rsFailed:
		if reincarnates && !x.stopWanted && !x.mayUnwind {
			out = out.with(situation{rs: rsStarting, mayUnwind: true}) // N8 reincarnation
		}
	}
	switch x.rs {
	case rsStarting, rsRunning, rsRebooting, rsMigrating:
		move(rsStopping) // N4, N8: the active VMM ended; stopping until unlinked
		if x.rebootPending && x.rs != rsMigrating {
			y := x
			y.rs, y.rebootPending = rsRebooting, false
			out = out.with(y) // N4: the sled's rebooting reached the database
		}
	}
	if x.mayUnwind {
		out = out.with(situation{rs: rsStopped, stopWanted: x.stopWanted}) // N7: start saga undo
		if x.rs != rsFailed {
			move(rsFailed) // N4: its VMM shows saga_unwound until unlinked
		}
	}
	return out
}
