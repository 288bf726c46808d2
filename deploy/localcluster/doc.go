// Command localcluster starts a working rackplane cluster on one machine,
// for people trying the API by hand. It builds nexus, sled-agent and
// rackctl, starts the simulated sled-agents as its children, and sets the
// rack up from a plan with `nexus rack-setup`, as an operator would (SPEC
// Z11): the sled-agents then run each nexus replica as a zone, a
// supervised process (Z10). It mints a fleet-admin token, waits until
// every sled has registered, writes rackctl's config for the cluster,
// then prints the REST API URLs, the token and example rackctl and curl
// commands.
//
// From the repository root:
//
//	go run ./deploy/localcluster              # SQLite, two sleds, one replica; state in .local/cluster
//	go run ./deploy/localcluster --fresh      # wipe that state first
//	go run ./deploy/localcluster --postgres   # PostgreSQL, three sleds, a replica on each
//
// The state directory holds the cluster's ids (identity.json, made up at
// its first start, so that two clusters never share one), the binaries
// (bin/, rackctl among them), rackctl's config for this cluster
// (rackctl.yaml: its URL and this start's token, mode 0600; use it with
// RACKPLANE_CONFIG), the rack plan (rack-plan.json, replaced only by a
// plan rack setup took), nexus's SQLite database (nexus/), each sled's ledgers
// and zones (sled-N/; a nexus zone's log is its zone.log there) and the
// logs of this run (logs/). Without --fresh a restart reuses all of it:
// the rack is already set up, so rack setup only pushes the zones configs
// again, nexus keeps its projects and sleds, and the sleds bring their
// zones back. The rack keeps the ports it was set up with: a restart
// without --api-port and --metrics-port takes them from rack-plan.json,
// and other ports need --fresh. With --postgres the database is a
// throwaway server started from this machine's PostgreSQL binaries (its
// files in a fixed temporary directory named after the state directory),
// so the state starts fresh each time. One state directory serves one
// launcher at a time; a second one is refused. It is known by its real
// path (symbolic links resolved) and cannot be moved, and it keeps the
// mode it was made for (a --postgres one is not started as SQLite).
//
// Ctrl-C (SIGINT) or SIGTERM sends SIGTERM to every sled-agent, then to
// the zones they leave running (a zone outlives its sled-agent by design),
// waits for them (then SIGKILL), and exits 0. If a sled-agent dies on its
// own, the others are stopped and the launcher exits 1 with the tail of its
// log; a nexus zone that dies is restarted by its sled-agent. On Linux the
// sled-agents also die if the launcher itself is killed; their nexus zones
// then keep running, and the next start on the same state adopts them, or,
// with --fresh or --postgres, stops them before it wipes the state.
package main
