// Package pgtest gives tests a real PostgreSQL database (SPEC N1): each call
// to DSN returns a fresh, empty database on a server started once per test
// binary.
//
// Where the server comes from, in order:
//  1. RACKPLANE_TEST_POSTGRES_DSN, a server someone else runs;
//  2. the PostgreSQL server binaries on this machine (initdb and postgres,
//     found on PATH or under /usr/lib/postgresql/*/bin), run as the postgres
//     user when the tests run as root, with fsync off, on a loopback port,
//     killed with the test binary;
//  3. a Docker engine (as testcontainers-go finds one: DOCKER_HOST, its
//     configuration, the usual sockets): a postgres:15-alpine container,
//     fsync off, trusting every connection, removed at the end (or by
//     testcontainers' reaper if the test binary dies).
//
// Each is tried only when those before it are missing; local binaries come
// before a container because they start in a fraction of the time.
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
