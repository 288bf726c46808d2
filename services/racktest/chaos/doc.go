// Package chaos is the core of the linearizability check of SPEC R1: a
// recorder of what clients saw (History), a model of an instance's
// externally visible state machine (N4, N7, F1-F12), and Check, which runs
// porcupine over the two and, when a history is not linearizable, writes
// it and porcupine's HTML view where a failing CI log can point.
//
// # Theory of operation
//
// An instance's state cannot be known exactly from outside: background
// work moves it on its own (a VMM reports running, an update saga unlinks
// an ended VMM, reincarnation restarts a failed instance), and part of
// what decides its future is hidden (its intended_state, whether a start
// saga that may still unwind holds its VMM). The model's state is
// therefore the SET of situations the instance may be in, always closed
// under the background transitions; each operation maps every situation
// to what it can become, and each answer narrows the set. An empty set is
// a violation.
//
// A situation is what users see (run_state) plus hidden facts:
//
//   - stop wanted: intended_state = stopped (N7, F2). While a VMM still
//     runs, RunState shows such an instance stopping (N4), so the model
//     never holds starting, running or rebooting with a stop wanted.
//   - may unwind: a start saga (one of a start that did not answer 2xx, or
//     reincarnation's) holds the VMM and may yet unwind it (N7 undo),
//     putting the instance back to stopped. Doomed: that start was
//     refused, so it does unwind, and its VMM never ran.
//   - reboot pending: a sled took a reboot whose rebooting the database
//     has not heard of yet; it may still show rebooting after the reboot
//     answered 202.
//
// The background transitions (model.go, background), each with the SPEC
// behaviour behind it:
//
//	starting  -> running             VMM reported running, unless doomed (N4)
//	rebooting -> running             reboot done (N4)
//	migrating -> running             migration resolved, either way the guest runs on (N6)
//	migrating -> stopping            ... when a stop is wanted: the update stops it (N6, N13)
//	starting|running|rebooting|migrating -> stopping
//	                                 the active VMM ended or failed; stopping until unlinked (N4, N8)
//	stopping  -> failed              unlinked a failed VMM (N6)
//	stopping  -> stopped             unlinked, when a stop is wanted (N6, N13)
//	failed    -> starting            reincarnation, when no stop is wanted and the policy
//	                                 allows (N8); its saga may unwind
//	any state whose saga may unwind -> stopped, or failed while its VMM shows saga_unwound (N7, N4)
//	starting|running -> rebooting    a pending reboot shows (N4)
//
// Nothing else moves on its own: stopped stays stopped until a start, and
// a failed instance whose stop is wanted stays failed (F2).
//
// # What each answer means
//
// What every call does to each situation is in effects.go, with the SPEC
// behaviour and the product code it follows. A mutating call (start,
// stop, reboot, force-terminate, migrate) has two points: its effect, and
// the read of the instance its answer carries, which nexus makes
// afterwards (instanceView, or the snapshot force-terminate settles to).
// A 2xx answer therefore becomes two porcupine operations over the call's
// interval: its effect, and a view of the run_state it answered. Every
// order of the two within the interval is tried, which is sound: the real
// order is one of them.
//
// An answer is one of three outcomes:
//
//   - 2xx: the call took effect.
//   - a definite refusal (409, and 400/404/507 where the product answers
//     them): allowed only in situations where nexus gives it, and with
//     the effect nexus had before refusing (a refused stop still recorded
//     its wish).
//   - indeterminate: 503, other 5xx, 408, a timeout or a transport error,
//     or no answer when the history was read. The call may have taken
//     effect at any time after it was invoked, even long after its answer
//     (a saga resumed by a restarted replica, a call a paused sled had
//     queued), or never. It adds a token to the state when it is invoked,
//     which the state may spend once, at any later moment (state.go
//     explains why not porcupine's usual "return at the end").
package chaos
