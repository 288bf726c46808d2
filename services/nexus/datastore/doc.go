// Package datastore holds all of nexus's SQL (SPEC N1-N3). Nothing else in
// nexus writes a query.
//
// One implementation serves two backends through database/sql: embedded
// SQLite (pure Go, WAL; the default, one nexus) and PostgreSQL (production,
// any number of nexus replicas). The SQL is kept to what SQLite, PostgreSQL
// and CockroachDB all speak: $n placeholders, INSERT … ON CONFLICT,
// UPDATE … RETURNING, partial unique indexes, CHECK constraints. The schema
// is versioned: migrations/NNNN_name.sql are applied in order, once, each in
// its own transaction, and recorded in schema_migrations.
//
// Every write of a VMM's or an instance's runtime state is a generation
// guarded UPDATE (N3) with three distinct outcomes: written (true, nil), not
// written because the stored generation is not older (false, nil), and no
// such row (model.ErrNotFound). The invariant "an instance is in state vmm exactly
// when it has an active VMM" is a CHECK constraint, not a convention.
//
// Timestamps are stored as TIMESTAMPTZ written from RFC 3339 text (SQLite
// keeps the text, PostgreSQL parses it), in UTC with microsecond precision,
// so both backends read back the same instant.
package datastore
