// Package pgtest gives tests a real PostgreSQL database (SPEC N1): each call
// to DSN returns a fresh, empty database on a server started once per test
// binary.
//
// Where the server comes from, in order:
//  1. RACKPLANE_TEST_POSTGRES_DSN, a server someone else runs;
//  2. the PostgreSQL server binaries on this machine (initdb and postgres,
//     found on PATH or under /usr/lib/postgresql/*/bin), run as the postgres
//     user when the tests run as root, with fsync off, on a loopback port,
//     killed with the test binary.
//
// With CI=true a test that cannot get a database fails; elsewhere it is
// skipped with the reason, so that a laptop without PostgreSQL can still
// run the rest. Packages using it call Main from TestMain so the server is
// stopped and its files removed at the end.
//
// Programs that need a throwaway server of their own (the force-terminate
// benchmark, services/nexus/cmd/ftbench) call StartServer, which starts one
// from the same binaries, durable (fsync on) if asked.
package pgtest
