package racktest

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/racksetup"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// Rack is a running rack: nexus replicas over one database, and sleds.
type Rack interface {
	// Nexus is replica i; Nexuses all of them.
	Nexus(i int) Nexus
	Nexuses() []Nexus
	// Sled is sled i; Sleds all of them.
	Sled(i int) Sled
	Sleds() []Sled
	// Database is the rack's database.
	Database() Database
	// DataStore is a handle of the harness's own on the database, for
	// checks and set-up behind the API's back.
	DataStore() *datastore.DataStore
	// Client is a REST client of replica 0 with a new token of role.
	Client(role Role) *Client
	// Token mints a token of role for a new principal.
	Token(role Role) string
}

// Member is one process of the rack. In process, a member is goroutines of
// the test: Kill stops a replica abruptly (requests and sagas cut short
// where they are) and a sled-agent as Stop does, and Pause is refused
// (nothing can freeze a goroutine); use the processes backend for them.
type Member interface {
	Name() string
	// Stop stops the member gracefully.
	Stop()
	// Kill stops it at once: kill -9 for a process.
	Kill()
	// Restart starts it again on the same state and addresses, stopping
	// it first if it runs.
	Restart()
	// Pause freezes it (SIGSTOP); Resume lets it go on (SIGCONT).
	Pause()
	Resume()
}

// Nexus is a nexus replica.
type Nexus interface {
	Member
	ID() uuid.UUID
	// InternalAddr is where sled-agents reach it.
	InternalAddr() string
	// ExternalURL is the base URL of its REST API.
	ExternalURL() string
	// MetricsURL is the base URL of its metrics listener.
	MetricsURL() string
}

// Sled is a simulated sled: its sled-agent and the gRPC helpers of
// sledagenttest.Remote (inventory, faults, explicit stepping).
type Sled interface {
	Member
	ID() uuid.UUID
	// Addr is where nexus reaches the agent (through the proxy, if any).
	Addr() string
	// Agent is the agent's gRPC API and fault injection.
	Agent() sledagenttest.Remote
	// Isolate cuts nexus off from the agent and Heal mends it; both need
	// Options.SledProxies.
	Isolate()
	Heal()
}

// Options describe a rack; the zero value is one nexus on SQLite and no
// sleds.
type Options struct {
	// Backend is the database engine (SQLite by default).
	Backend datastore.Backend
	// DatabaseURL is an existing empty database to use; by default the
	// rack gets a fresh one.
	DatabaseURL string
	// Nexuses is how many replicas run (at least 1; more than one only
	// on PostgreSQL).
	Nexuses int
	// Sleds is how many sleds run. Start waits until all have registered.
	Sleds int
	// ZoneRuntime is how the nexus replicas run: "sim" (the default) runs
	// them beside the sleds, started by the harness, and the sleds' zones
	// in the simulated runtime; "process" runs them as nexus zones of the
	// sleds (the process zone runtime, Z10), set up by rack setup (Z11).
	ZoneRuntime string
	// RackSetup, with the simulated zone runtime, also records the
	// replicas as nexus zones of the sleds through rack setup (Z11):
	// replica i a zone of sled i mod Sleds. Nexus then owns the sleds'
	// zones configs (Z9), and a replica can be expunged; its zone is a
	// simulated one, so its process is the harness's to stop. The
	// process zone runtime always sets the rack up.
	RackSetup bool
	// PlanZones, with RackSetup, adds zones of other kinds to sled i's
	// part of the plan; pools are the sled's zpools.
	PlanZones func(sled int, pools []string) []racksetup.Zone
	// SledProxies puts a proxy between nexus and each sled-agent, so that
	// a test can Isolate a sled.
	SledProxies bool
	// NexusConfig and SledConfig adjust member i's configuration once the
	// harness has filled in its addresses, database and directories.
	NexusConfig func(i int, c *nexusconfig.Config)
	SledConfig  func(i int, c *sledconfig.Config)
	// Log is every in-process member's logger; by default warnings and
	// errors go to the test's log.
	Log *zap.Logger
	// NexusOptions go to nexus.New (in process only: saga hooks and the
	// like).
	NexusOptions []nexus.Option
	// NexusFirstArgs are extra arguments of each nexus process's first
	// start (processes only: test hooks such as --crash-point); restarts
	// run it without them.
	NexusFirstArgs []string
	// NexusZoneArgs are extra arguments of replica i's command with the
	// process zone runtime, at every start (its sled-agent restarts it
	// with them). The command is its sled's for every nexus zone there.
	NexusZoneArgs map[int][]string
}

// rack is what both backends share: the database, the harness's own
// handle on it, and the members.
type rack struct {
	t       testutil.TB
	db      Database
	ds      *datastore.DataStore
	nexuses []Nexus
	sleds   []Sled
}

func (r *rack) Nexus(i int) Nexus               { return r.nexuses[i] }
func (r *rack) Nexuses() []Nexus                { return slices.Clone(r.nexuses) }
func (r *rack) Sled(i int) Sled                 { return r.sleds[i] }
func (r *rack) Sleds() []Sled                   { return slices.Clone(r.sleds) }
func (r *rack) Database() Database              { return r.db }
func (r *rack) DataStore() *datastore.DataStore { return r.ds }
func (r *rack) Token(role Role) string          { return mintToken(r.t, r.ds, role) }

func (r *rack) Client(role Role) *Client {
	return NewClient(r.nexuses[0].ExternalURL(), r.Token(role))
}

// startNexuses starts the replicas with start, one after another (the
// first creates the schema), or, with the process zone runtime, plans
// them as zones of the sleds to come and returns that plan.
func (r *rack) startNexuses(o Options, start func(i int, id uuid.UUID, a nexusAddrs) Nexus) *nexusZones {
	r.t.Helper()
	if o.ZoneRuntime == "process" {
		return planNexusZones(r.t, o)
	}
	for i := range o.Nexuses {
		a := FreeAddrs(r.t, 4)
		r.nexuses = append(r.nexuses, start(i, uuid.New(),
			nexusAddrs{internal: a[0], external: a[1], externalGRPC: a[2], metrics: a[3]}))
	}
	return nil
}

// sledConfig is sled i's configuration: the rack's defaults, pointed at its
// replicas (with zones, at all of them, and running the nexus zones), on
// its listener and the address nexus reaches it at, adjusted by the test.
func (r *rack) sledConfig(o Options, zones *nexusZones, i int, listen, advertise string) sledconfig.Config {
	var c sledconfig.Config
	if zones != nil {
		c = rackSledConfig(r.t, zones.internalAddrs()...)
		zones.sledConfig(i, &c)
	} else {
		c = rackSledConfig(r.t, r.nexuses[i%len(r.nexuses)].InternalAddr())
	}
	c.ListenAddress, c.AdvertiseAddress = listen, advertise
	if o.SledConfig != nil {
		o.SledConfig(i, &c)
	}
	return c
}

// finish sets up the nexus zones, if the replicas are zones, and waits
// until every sled has registered.
func (r *rack) finish(o Options, zones *nexusZones, log *zap.Logger) {
	r.t.Helper()
	if zones != nil {
		zones.setUp(r.db, r.sleds, log)
		for _, n := range zones.members {
			r.nexuses = append(r.nexuses, n)
		}
	} else if o.RackSetup {
		r.setUpSimulatedZones(o, log)
	}
	waitRegistered(r.t, r.ds, r.sleds)
}

// setUpSimulatedZones runs rack setup over the started sleds, with the
// running replicas as nexus zones in the sleds' simulated runtime.
func (r *rack) setUpSimulatedZones(o Options, log *zap.Logger) {
	r.t.Helper()
	plan := racksetup.Plan{Database: racksetup.Database{Backend: string(r.db.Backend), URL: r.db.URL}}
	for i, s := range r.sleds {
		ps := racksetup.Sled{ID: s.ID().String(), Address: s.Addr()}
		if o.PlanZones != nil {
			ps.Zones = o.PlanZones(i, s.Agent().Inventory().GetResources().GetZpools())
		}
		plan.Sleds = append(plan.Sleds, ps)
	}
	for i, n := range r.nexuses {
		sled := &plan.Sleds[i%len(plan.Sleds)]
		pools := r.sleds[i%len(r.sleds)].Agent().Inventory().GetResources().GetZpools()
		sled.Zones = append(sled.Zones, racksetup.Zone{ID: n.ID().String(), Kind: model.ZoneNexus, Pool: pools[0],
			Address: n.InternalAddr(), Nexus: &racksetup.NexusListeners{ExternalAddress: hostPort(n.ExternalURL()),
				MetricsAddress: hostPort(n.MetricsURL())}})
	}
	if _, err := racksetup.Run(context.Background(), plan, racksetup.Options{ReadyBound: zoneRackBound, Log: log,
		Trust: rackpkitest.For(r.t).Operator()}); err != nil {
		r.t.Fatalf("rack setup: %v", err)
	}
}

func hostPort(url string) string { return strings.TrimPrefix(url, "http://") }

// newRack is a rack over the options' database, or a fresh one.
func newRack(t testutil.TB, o Options) *rack {
	r := &rack{t: t, db: Database{Backend: o.Backend, URL: o.DatabaseURL}}
	if r.db.URL == "" {
		r.db = NewDatabase(t, o.Backend)
	}
	return r
}

// registrationBound bounds how long sleds take to register with nexus.
const registrationBound = 30 * time.Second

// rackSledConfig is a sled's configuration in a rack: quick heartbeats and
// retries, and a simulated hypervisor moving on its own.
func rackSledConfig(t testutil.TB, nexusAddrs ...string) sledconfig.Config {
	c := sledagenttest.Config(t)
	c.NexusAddress = nexusAddrs
	c.HeartbeatPeriod = sledconfig.Duration(20 * time.Millisecond)
	c.PublishRetryInitial = sledconfig.Duration(5 * time.Millisecond)
	c.PublishRetryMax = sledconfig.Duration(50 * time.Millisecond)
	c.NexusCallTimeout = sledconfig.Duration(2 * time.Second)
	c.HypervisorMode = "auto"
	c.VMMTransitionDelay = sledconfig.Duration(5 * time.Millisecond)
	return c
}

// nexusAddrs are a replica's listeners, fixed for its life so that it
// restarts where sleds and clients expect it.
type nexusAddrs struct{ internal, external, externalGRPC, metrics string }

func (o Options) withDefaults(t testutil.TB) Options {
	t.Helper()
	if o.Backend == "" {
		o.Backend = datastore.SQLite
	}
	if o.Nexuses == 0 {
		o.Nexuses = 1
	}
	if o.Nexuses > 1 && o.Backend != datastore.Postgres {
		t.Fatalf("racktest: %d nexus replicas need PostgreSQL, not %s", o.Nexuses, o.Backend)
	}
	if o.ZoneRuntime == "" {
		o.ZoneRuntime = "sim"
	}
	if o.ZoneRuntime != "sim" && o.ZoneRuntime != "process" {
		t.Fatalf("racktest: zone runtime %q is not sim or process", o.ZoneRuntime)
	}
	return o
}

// nexusConfig is replica i's configuration over the rack's database, with
// a certificate of the test's rack CA.
func (o Options) nexusConfig(t testutil.TB, i int, id uuid.UUID, db Database, a nexusAddrs) nexusconfig.Config {
	c := nexusconfig.Default()
	c.ID = id.String()
	c.TLSDir = rackpkitest.For(t).Member(rackpki.Identity{Kind: rackpki.Nexus, ID: c.ID})
	c.InternalListen, c.ExternalListen, c.ExternalGRPCListen, c.MetricsListen = a.internal, a.external, a.externalGRPC, a.metrics
	c.DatabaseBackend, c.DatabaseURL = string(db.Backend), db.URL
	if o.NexusConfig != nil {
		o.NexusConfig(i, &c)
	}
	return c
}

// EverySled is a SledConfig applying opts to every sled.
func EverySled(opts ...func(*sledconfig.Config)) func(int, *sledconfig.Config) {
	return func(_ int, c *sledconfig.Config) {
		for _, o := range opts {
			o(c)
		}
	}
}

// Kind is a backend of the harness: how members run.
type Kind string

const (
	// InProcessKind runs members as goroutines of the test.
	InProcessKind Kind = "in-process"
	// ProcessesKind runs members as processes of the real binaries.
	ProcessesKind Kind = "processes"
)

// Kinds are both backends, for a scenario that must hold either way.
var Kinds = []Kind{InProcessKind, ProcessesKind}

// Start starts a rack of kind.
func Start(t testutil.TB, kind Kind, o Options) Rack {
	t.Helper()
	if kind == ProcessesKind {
		return StartProcesses(t, o)
	}
	return StartInProcess(t, o)
}
