// Package racktest is the one harness that assembles racks for tests (and
// for benchmark commands): nexus replicas over one database, and simulated
// sleds, behind one interface with two backends, after etcd's test
// framework.
//
//   - InProcess runs every member as goroutines of the test, so tests can
//     reach inside (a replica's datastore, its background tasks, saga
//     hooks, an agent's fault injection).
//   - Processes runs the real nexus and sled-agent binaries, so tests can
//     kill -9 them, pause them (SIGSTOP) and restart them.
//
// Both take the same Options (replicas, sleds, SQLite or PostgreSQL, the
// zone runtime, config adjustments) and give the same controls on every
// member: Stop, Kill, Restart, Pause, Resume; and a REST client with a
// token of any role. The helpers every multi-component test needs are
// written once here: the REST call, free ports, building a binary,
// running a process, a TCP proxy that can cut a link, and running a test
// against every database backend.
package racktest
