package racktest

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

const (
	// processStartBound bounds a member's start, build excluded.
	processStartBound = 30 * time.Second
	// nexusReady and sledReady are what the services log once they listen.
	nexusReady = "nexus listening"
	sledReady  = "sled-agent listening"
)

// Processes is a rack whose members are the real binaries, each its own
// process, on fixed loopback addresses.
type Processes struct{ *rack }

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
	r := &Processes{newRack(t, o)}
	zones := r.startNexuses(o, func(i int, id uuid.UUID, a nexusAddrs) Nexus {
		n := &ProcessNexus{addrs: a, id: id}
		n.Process = NewProcess(t, fmt.Sprintf("nexus-%d", i), nexusBin, o.nexusConfig(t, i, id, r.db, a).Args()...)
		n.Start(o.NexusFirstArgs...)
		n.WaitLog(nexusReady, processStartBound, nil)
		return n
	})
	r.ds = r.db.Open(t)
	for i := range o.Sleds {
		a := FreeAddrs(t, 2)
		s := &ProcessSled{listen: a[0]}
		advertise := ""
		if o.SledProxies {
			s.proxy = StartProxy(t, a[1], a[0])
			advertise = s.proxy.Addr()
		}
		cfg := r.sledConfig(o, zones, i, a[0], advertise)
		s.id = uuid.MustParse(cfg.SledID)
		s.Process = StartProcess(t, fmt.Sprintf("sled-%d", i), sledBin, cfg.Args()...)
		s.WaitLog(sledReady, processStartBound, nil)
		s.remote = sledagenttest.NewRemote(t, sledagenttest.DialAgent(t, s.listen, cfg.SledID))
		r.sleds = append(r.sleds, s)
	}
	r.finish(o, zones, zap.NewNop())
	return r
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
func (n *ProcessNexus) Restart() { n.restart(nexusReady) }

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
func (s *ProcessSled) Restart() { s.restart(sledReady) }
