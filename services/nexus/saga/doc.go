// Package saga is nexus's durable saga engine (SPEC N5), after omicron's
// steno: a multi-step operation is a chain of idempotent actions, each with
// an optional undo, whose progress is logged in the database before and
// after every step, so that a nexus that dies at any moment finishes or
// unwinds the operation after it restarts.
//
// A Template is registered once per kind of saga; Start or Run creates a
// saga from it with JSON parameters. The engine logs "started" before a
// node's action and "succeeded" (with its JSON output) or "failed" after it;
// unwinding logs "undo_started" and "undo_succeeded" or "undo_failed". The
// saga row holds the state (running, unwinding, done, unwound, stuck) and
// its owner, the nexus that runs it. Persistence is the Store interface,
// implemented by nexus's datastore; this package imports no SQL.
//
// Decisions where the spec is silent:
//
//   - Nodes run one after another in declared order. Parallel branches of
//     a DAG are not supported yet: no saga needs them so far, and a chain
//     keeps replay and unwinding order obvious.
//   - The log holds at most one event of each type per node, and appending
//     an existing one changes nothing. Replay looks only at which events a
//     node has, never at their order or timestamps.
//   - Resuming after a crash: a node started but without an outcome runs
//     again (actions are idempotent); succeeded nodes are not re-run, their
//     logged outputs are used. An unwinding saga undoes, last first, every
//     node that succeeded or started without an outcome; undos must
//     tolerate an action that never took effect (Context.Output then
//     returns ErrNoOutput). The node whose action failed is not undone: a
//     failing action must leave nothing behind, as in steno. Except after a
//     crash: a node started before it and run again on recovery may have
//     taken effect in the run the crash cut short, so if its new run fails
//     it is undone too (the failed event carries that mark, durably).
//     Without this, a registration done just before the crash would outlive
//     a saga that unwound because the sled was unreachable afterwards.
//   - Actions are not retried by the engine: an action that can meet a
//     transient error retries it itself, and its failure unwinds the saga.
//     An undo is retried (WithUndoRetry, default 5 tries with backoff);
//     after that the saga is stuck: logged at error, counted in Stats, listed
//     by Stuck, and never resumed automatically, because only an operator
//     can tell what the half-undone operation left behind. An undo whose
//     error says what it needs is only away for now (WithUndoRetryWhile:
//     nexus names an unreachable sled and a failing-over database) is
//     retried without counting, up to a bound.
//   - A failed database write of the log is retried with backoff until the
//     engine shuts down: a saga never moves past a step it could not log.
//   - Sagas run under the engine's context, not the caller's: a request
//     that gives up does not leave its saga half done. Run's and Wait's ctx
//     bound only the waiting.
//   - Shutdown lets every saga log the outcome of the node it is running and
//     stop before the next one; Recover at the next start carries on. An
//     action that fails while the engine's context is cancelled is not
//     logged as failed (it is most likely the cancellation) and runs again.
//   - A panicking action or undo counts as failed, so that one bad saga
//     unwinds rather than crashing nexus again after every restart.
//   - Ownership: state changes are compare-and-set on (owner, state), so an
//     engine whose saga row changed under it stops driving the saga
//     (ErrOwnershipLost). Moving the sagas of a dead nexus to a live one
//     (omicron's re-assignment of an expunged nexus's sagas) is not built
//     yet; until it is, a nexus id must be stable across restarts.
//   - Recover is called once at start, after Register and before Start. A
//     saga whose template is unknown, or whose log names a node its
//     template no longer has, is left as it is and reported: renaming or
//     removing nodes of a template needs its unfinished sagas drained first.
//   - The error of an unwound saga is an *ActionError holding the action's
//     own error while the saga ran in this process; a saga read back from
//     the database (after a restart) keeps only its text. A stuck saga's
//     *StuckError matches both its undo error and its ActionError.
//   - Stats counts what this engine did since it started; Stuck lists every
//     stuck saga in the database, whichever nexus owns it.
//
// Hooks (WithHooks) let a test freeze a saga at each crash window: after
// "started" is durable and before the action, and after the action and
// before its outcome is logged (and the same around undos). WithRepeat runs
// each action and undo twice in a row, as omicron's saga tests do, to prove
// them idempotent.
package saga
