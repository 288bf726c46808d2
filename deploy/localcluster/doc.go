// Command localcluster starts a working rackplane cluster on one machine,
// for people trying the API by hand: it builds nexus and sled-agent, mints a
// fleet-admin token, runs nexus (SQLite) and two simulated sled-agents as
// separate processes, waits until both sleds have registered, then prints
// the REST API URL, the token and example curl commands.
//
// From the repository root:
//
//	go run ./deploy/localcluster            # state in .local/cluster
//	go run ./deploy/localcluster --fresh    # wipe that state first
//
// The state directory holds the binaries (bin/), nexus's database (nexus/),
// each sled's ledgers and simulated zones (sled-1/, sled-2/) and the logs
// of this run (logs/). Without --fresh a restart reuses all of it: nexus
// keeps its projects and sleds, and the sleds adopt their zones.
//
// Ctrl-C (SIGINT) or SIGTERM sends SIGTERM to every child, waits for them
// (then SIGKILL), and exits 0. If a child dies on its own, the others are
// stopped and the launcher exits 1 with the tail of that child's log. On
// Linux the children also die if the launcher itself is killed.
package main
