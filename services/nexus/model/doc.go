// Package model is nexus's domain: the records nexus keeps (instances,
// VMMs, migrations, sleds, projects, tokens), their states, the domain
// errors every layer speaks, and the pure rules that decide what an
// instance is (N4) and what its VMMs make of it (N6). It imports no SQL, no
// gRPC and no HTTP, so handlers, clients and sagas share these types
// without reaching into the datastore, and the rules are unit-tested
// without a database.
//
// Generation ownership (N3, V5), which every writer follows:
//
//   - A VMM's state_generation belongs to the sled-agent running it while it
//     is registered: each transition the sled makes bumps it, and nexus
//     writes what the sled says only through the guard "newer than
//     stored". Nexus numbers a VMM itself only where the sled cannot: the
//     record it creates (generation 1), a VMM the sled does not know (F5:
//     the generation read plus one, so a newer word from the sled wins),
//     and saga_unwound after the sled unregistered it.
//   - An instance's state_generation belongs to nexus: every runtime write
//     (a saga linking a VMM, an update settling it, a delete) is the
//     generation read plus one, through the guard, so concurrent writers
//     serialize and the loser reads again.
//   - Each side of a migration is numbered by the sled-agent running that
//     side, and written through its own guard.
//   - intended_state is the user's wish, not runtime: the latest request
//     wins, without a guard.
//   - The updater lock (updater_id) is held by one instance update at a
//     time (N6); an instance settle writes only when the lock is free or
//     held by the writer.
package model
