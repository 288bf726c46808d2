// Package nexustest starts real nexus replicas for tests: in process, on a
// loopback port, over a fresh SQLite file or a fresh PostgreSQL database.
package nexustest
