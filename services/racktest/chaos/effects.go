package chaos

import "net/http"

// outcome is what an answer says about a call's effect (package doc).
type outcome uint8

const (
	outcomeOK outcome = iota
	outcomeRefused
	outcomeIndeterminate
)

func (o outcome) String() string {
	return [...]string{"ok", "refused", "indeterminate"}[o]
}

// outcomeOf classifies an HTTP status; 0 is no answer (a timeout or a
// transport error). 507 is a refusal: capacity is checked before anything
// is written. 408 is taken as indeterminate, to be safe.
func outcomeOf(status int) outcome {
	switch {
	case status >= 200 && status < 300:
		return outcomeOK
	case status == 0, status == http.StatusRequestTimeout,
		status >= 500 && status != http.StatusInsufficientStorage:
		return outcomeIndeterminate
	}
	return outcomeRefused
}

// refusals are the statuses nexus refuses each call with for a tracked
// instance and a well-formed request; any other refusal is a violation. A
// view or list is never refused.
var refusals = map[Kind][]int{
	KindStart:          {http.StatusConflict, http.StatusInsufficientStorage}, // busy (link refused), no capacity
	KindStop:           {http.StatusConflict},                                 // the sled refused (a migrating VMM)
	KindReboot:         {http.StatusConflict},                                 // not running
	KindForceTerminate: {http.StatusConflict},                                 // its VMMs kept changing
	KindMigrate: {http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, // same sled, no such sled, not running
		http.StatusInsufficientStorage},
}

// effect is what a call answered with outcome (ok or refused) does to one
// situation: the situations it can leave behind, none when nexus cannot
// give that outcome there.
type effect func(x situation, o outcome) set

var effects = map[Kind]effect{
	KindStart:          start,
	KindStop:           stop,
	KindReboot:         reboot,
	KindForceTerminate: forceTerminate,
	KindMigrate:        migrate,
}

// happened is what a call of kind whose answer is unknown did to x, if it
// did anything: whatever a 2xx or a refusal would have.
func happened(kind Kind, x situation) set {
	return effects[kind](x, outcomeOK).union(effects[kind](x, outcomeRefused))
}

// start: a stopped or failed instance gets a VMM and is starting (N7,
// F11); one that already has a VMM is left as it is (N7). A refused start
// first wrote its wish to run, and its saga may have linked a VMM that it
// then unwound before answering (N7 undo) and that never ran: the sled
// refused it, or a stop did. nexus refuses only an instance it found
// without a VMM.
func start(x situation, o outcome) set {
	switch {
	case x.hasVMM() && o == outcomeOK:
		return set{}.with(x)
	case x.hasVMM():
		return set{}
	case o == outcomeOK:
		return set{}.with(situation{rs: rsStarting})
	}
	wish := x
	wish.stopWanted = false
	return set{}.with(wish).with(situation{rs: rsStarting, mayUnwind: true, doomed: true})
}

// stopped is x once its stop is recorded (N7, F2): a stopped instance
// stays so, a failed one moves to stopped in the database alone (N7, F11),
// the others show stopping (N4) until their VMM is gone.
func stopped(x situation) set {
	if !x.hasVMM() {
		return set{}.with(situation{rs: rsStopped, stopWanted: true})
	}
	x.stopWanted = true
	return set{}.with(x)
}

// stop always records the wish first; nexus refuses (409) only when the
// sled refused to stop a VMM, so only an instance with a live VMM.
func stop(x situation, o outcome) set {
	if o == outcomeOK || (x.hasVMM() && x.rs != rsFailed) {
		return stopped(x)
	}
	return set{}
}

// reboot asks a running VMM to reboot; the sled may report rebooting after
// the 202 (reboot pending). nexus answers 202 only where the active VMM
// runs in the database: running, starting (its sled already runs it),
// rebooting, migrating (the source still runs), or stopping with a stop
// wanted that has not reached the sled. It may refuse anywhere: the sled
// knows better than the database.
func reboot(x situation, o outcome) set {
	rebootable := x.rs == rsRunning || x.rs == rsStarting || x.rs == rsRebooting || x.rs == rsMigrating ||
		(x.rs == rsStopping && x.stopWanted)
	var ok set
	if rebootable {
		y := x
		y.rebootPending = true
		ok = set{}.with(y)
	}
	if o == outcomeOK {
		return ok
	}
	return set{}.with(x)
}

// forceTerminated: the wish to stop is recorded (F2), every VMM ended
// (F3-F5), and the instance settled (F6): stopped, or failed when a sled
// had forgotten its VMM (F1). A stopped or failed instance with nothing
// running is left as it is (F8).
func forceTerminated(x situation) set {
	switch {
	case x.rs == rsStopped:
		return set{}.with(situation{rs: rsStopped, stopWanted: true})
	case x.rs == rsFailed && !x.mayUnwind:
		return set{}.with(situation{rs: rsFailed, stopWanted: true})
	}
	return set{}.with(situation{rs: rsStopped, stopWanted: true}).with(situation{rs: rsFailed, stopWanted: true})
}

// forceTerminate refuses (409) only while the instance's VMMs keep
// changing, after recording the wish (F2); so an indeterminate one may
// also have stopped with only its wish recorded (F7).
func forceTerminate(x situation, o outcome) set {
	switch {
	case o == outcomeOK:
		return forceTerminated(x)
	case x.hasVMM():
		return stopped(x)
	}
	return set{}
}

// migrate moves an instance whose active VMM runs in the database: running,
// or stopping with a stop wanted that has not reached the sled (N7). A
// failed migration may have shown migrating before it unwound, so any
// answer but 2xx may have done so too.
func migrate(x situation, o outcome) set {
	var ok set
	if (x.rs == rsRunning && !x.stopWanted) || (x.rs == rsStopping && x.stopWanted) {
		y := x
		y.rs = rsMigrating
		ok = set{}.with(y)
	}
	if o == outcomeOK {
		return ok
	}
	return set{}.with(x).union(ok)
}
