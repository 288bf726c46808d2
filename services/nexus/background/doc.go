// Package background runs nexus's background tasks (SPEC N8): one driver,
// one goroutine per task, each task activated every period and on demand.
//
// A task is an idempotent activation: it looks at the database and the
// sleds, fixes what it finds, and returns. There is no retry inside a task;
// the next activation is the retry. Activations of one task never overlap,
// so an explicit Activate (tests, operators) waits for a periodic one under
// way and then runs its own.
package background
