package racktest

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// processStartBound bounds a member's start, build excluded.
const processStartBound = 30 * time.Second

// Processes is a rack whose members are the real binaries, each its own
// process, on fixed loopback addresses.
type Processes struct {
	t       testutil.TB
	db      Database
	ds      *datastore.DataStore
	nexuses []*ProcessNexus
	sleds   []*ProcessSled
}

var _ Rack = (*Processes)(nil)

// StartProcesses builds nexus and sled-agent (once per test process),
// starts the replicas one after another, then the sleds, and waits until
// every sled has registered. Every process is killed when the test ends.
func StartProcesses(t testutil.TB, o Options) *Processes {
	t.Helper()
	o = o.withDefaults(t)
	if len(o.NexusOptions) > 0 || o.Log != nil {
		t.Fatalf("racktest: NexusOptions and Log are for in-process racks; a process logs on its own")
	}
	nexusBin, sledBin := Build(t, NexusBinary), Build(t, SledAgentBinary)
	r := &Processes{t: t, db: Database{Backend: o.Backend, URL: o.DatabaseURL}}
	if r.db.URL == "" {
		r.db = NewDatabase(t, o.Backend)
	}
	for i := range o.Nexuses {
		a := FreeAddrs(t, 4)
		n := &ProcessNexus{addrs: nexusAddrs{internal: a[0], external: a[1], externalGRPC: a[2], metrics: a[3]}, id: uuid.New()}
		cfg := o.nexusConfig(i, n.id, r.db, n.addrs)
		n.Process = NewProcess(t, fmt.Sprintf("nexus-%d", i), nexusBin, cfg.Args()...)
		n.Start(o.NexusFirstArgs...)
		n.waitListening()
		r.nexuses = append(r.nexuses, n)
	}
	r.ds = r.db.Open(t)
	for i := range o.Sleds {
		a := FreeAddrs(t, 2)
		cfg := rackSledConfig(t, r.nexuses[i%len(r.nexuses)].InternalAddr())
		cfg.ListenAddress = a[0]
		s := &ProcessSled{listen: a[0]}
		if o.SledProxies {
			s.proxy = StartProxy(t, a[1], a[0])
			cfg.AdvertiseAddress = s.proxy.Addr()
		}
		if o.SledConfig != nil {
			o.SledConfig(i, &cfg)
		}
		s.id = uuid.MustParse(cfg.SledID)
		s.Process = StartProcess(t, fmt.Sprintf("sled-%d", i), sledBin, cfg.Args()...)
		s.waitListening()
		conn, err := grpc.NewClient(s.listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		s.remote = sledagenttest.NewRemote(t, conn)
		r.sleds = append(r.sleds, s)
	}
	waitRegistered(t, r.ds, r.Sleds())
	return r
}

func (r *Processes) Nexus(i int) Nexus { return r.nexuses[i] }

func (r *Processes) Nexuses() []Nexus {
	out := make([]Nexus, len(r.nexuses))
	for i, n := range r.nexuses {
		out[i] = n
	}
	return out
}

func (r *Processes) Sled(i int) Sled { return r.sleds[i] }

func (r *Processes) Sleds() []Sled {
	out := make([]Sled, len(r.sleds))
	for i, s := range r.sleds {
		out[i] = s
	}
	return out
}

func (r *Processes) Database() Database              { return r.db }
func (r *Processes) DataStore() *datastore.DataStore { return r.ds }
func (r *Processes) Token(role Role) string          { return mintToken(r.t, r.ds, role) }

func (r *Processes) Client(role Role) *Client {
	return NewClient(r.nexuses[0].ExternalURL(), r.Token(role))
}

// ProcessNexus is a nexus replica running as its own process.
type ProcessNexus struct {
	*Process
	id    uuid.UUID
	addrs nexusAddrs
}

var _ Nexus = (*ProcessNexus)(nil)

func (n *ProcessNexus) ID() uuid.UUID        { return n.id }
func (n *ProcessNexus) InternalAddr() string { return n.addrs.internal }
func (n *ProcessNexus) ExternalURL() string  { return "http://" + n.addrs.external }
func (n *ProcessNexus) MetricsURL() string   { return "http://" + n.addrs.metrics }

// Restart runs the replica again (without its first start's extra
// arguments) and waits until it listens.
func (n *ProcessNexus) Restart() {
	n.t.Helper()
	if n.Running() {
		n.Stop()
	}
	n.Start()
	n.waitListening()
}

func (n *ProcessNexus) waitListening() {
	n.t.Helper()
	n.WaitLog("nexus listening", processStartBound, nil)
}

// ProcessSled is a sled whose agent runs as its own process.
type ProcessSled struct {
	*Process
	id     uuid.UUID
	listen string
	proxy  *Proxy
	remote sledagenttest.Remote
}

var _ Sled = (*ProcessSled)(nil)

func (s *ProcessSled) ID() uuid.UUID               { return s.id }
func (s *ProcessSled) Agent() sledagenttest.Remote { return s.remote }
func (s *ProcessSled) Isolate()                    { isolate(s.t, s.name, s.proxy, true) }
func (s *ProcessSled) Heal()                       { isolate(s.t, s.name, s.proxy, false) }

func (s *ProcessSled) Addr() string {
	if s.proxy != nil {
		return s.proxy.Addr()
	}
	return s.listen
}

// Restart runs the agent again on its directories and address, and waits
// until it listens.
func (s *ProcessSled) Restart() {
	s.t.Helper()
	if s.Running() {
		s.Stop()
	}
	s.Start()
	s.waitListening()
}

func (s *ProcessSled) waitListening() {
	s.t.Helper()
	s.WaitLog("sled-agent listening", processStartBound, nil)
}
