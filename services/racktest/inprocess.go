package racktest

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/app"
	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// inProcessStopBound bounds a graceful stop of an in-process member.
const inProcessStopBound = 10 * time.Second

// InProcess is a rack whose members run inside the test.
type InProcess struct{ *rack }

var _ Rack = (*InProcess)(nil)

// StartInProcess starts a rack inside the test: the replicas one after
// another (the first creates the schema), then the sleds, and waits until
// every sled has registered. Everything stops when the test ends.
func StartInProcess(t testutil.TB, o Options) *InProcess {
	t.Helper()
	o = o.withDefaults(t)
	r := &InProcess{newRack(t, o)}
	log := o.Log
	if log == nil {
		log = sledagenttest.TestLogger(t)
	}
	zones := r.startNexuses(o, func(i int, id uuid.UUID, a nexusAddrs) Nexus {
		n := &InProcessNexus{t: t, name: fmt.Sprintf("nexus-%d", i), cfg: o.nexusConfig(t, i, id, r.db, a),
			opts: o.NexusOptions, log: log}
		n.start()
		t.Cleanup(n.Stop)
		return n
	})
	r.ds = r.db.Open(t)
	for i := range o.Sleds {
		s := &InProcessSled{name: fmt.Sprintf("sled-%d", i)}
		a := FreeAddrs(t, 2)
		advertise := ""
		if o.SledProxies {
			s.proxy = StartProxy(t, a[1], a[0])
			advertise = s.proxy.Addr()
		}
		s.agent = sledagenttest.StartLogged(t, log, func(c *sledconfig.Config) { *c = r.sledConfig(o, zones, i, a[0], advertise) })
		r.sleds = append(r.sleds, s)
	}
	r.finish(o, zones, log)
	return r
}

// Server is replica 0, for tests that reach inside it (not when the
// replicas run as zones).
func (r *InProcess) Server() *nexus.Server { return r.InProcessNexus(0).Server() }

// InProcessNexus is replica i.
func (r *InProcess) InProcessNexus(i int) *InProcessNexus { return r.nexuses[i].(*InProcessNexus) }

// Agents are the sled-agents, for tests that reach inside them.
func (r *InProcess) Agents() []*sledagenttest.Agent {
	out := make([]*sledagenttest.Agent, len(r.sleds))
	for i, s := range r.sleds {
		out[i] = s.(*InProcessSled).agent
	}
	return out
}

// InProcessNexus is a nexus replica running inside the test.
type InProcessNexus struct {
	t      testutil.TB
	name   string
	cfg    nexusconfig.Config
	opts   []nexus.Option
	log    *zap.Logger
	srv    *nexus.Server
	served chan error
}

var _ Nexus = (*InProcessNexus)(nil)

func (n *InProcessNexus) start() {
	n.t.Helper()
	srv, err := nexus.New(context.Background(), n.cfg, n.log, n.opts...)
	if err != nil {
		n.t.Fatalf("starting %s: %v", n.name, err)
	}
	n.srv, n.served = srv, make(chan error, 1)
	go func() { n.served <- srv.Serve() }()
}

// Server is the replica, for tests that reach inside it (its datastore,
// background tasks, metrics).
func (n *InProcessNexus) Server() *nexus.Server { return n.srv }

// Config is the replica's configuration.
func (n *InProcessNexus) Config() nexusconfig.Config { return n.cfg }

// Token mints a token for principal through this replica's application
// layer, which forgets the callers it remembered: grants to a principal
// that already had a token apply here at once.
func (n *InProcessNexus) Token(principal string, grants ...app.Grant) string {
	n.t.Helper()
	secret, err := n.srv.App().TokenCreate(context.Background(), principal, grants, 0)
	if err != nil {
		n.t.Fatalf("minting a token for %s: %v", principal, err)
	}
	return secret
}

func (n *InProcessNexus) Name() string         { return n.name }
func (n *InProcessNexus) ID() uuid.UUID        { return uuid.MustParse(n.cfg.ID) }
func (n *InProcessNexus) InternalAddr() string { return n.cfg.InternalListen }
func (n *InProcessNexus) ExternalURL() string  { return "http://" + n.cfg.ExternalListen }
func (n *InProcessNexus) MetricsURL() string   { return "http://" + n.cfg.MetricsListen }

// Stop shuts the replica down gracefully, if it runs.
func (n *InProcessNexus) Stop() { n.shutdown(inProcessStopBound) }

// Kill stops the replica at once: requests and sagas are cut short where
// they are, as by a crash (the test process lives on).
func (n *InProcessNexus) Kill() { n.shutdown(0) }

func (n *InProcessNexus) shutdown(grace time.Duration) {
	n.t.Helper()
	if n.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	n.srv.Shutdown(ctx)
	if err := <-n.served; err != nil {
		n.t.Errorf("%s serve: %v", n.name, err)
	}
	n.srv = nil
}

// Restart starts the replica again on its addresses and database.
func (n *InProcessNexus) Restart() {
	n.t.Helper()
	n.Stop()
	n.start()
}

func (n *InProcessNexus) Pause() {
	n.t.Fatalf("racktest: %s runs in process and cannot be paused; use the processes backend", n.name)
}

func (n *InProcessNexus) Resume() { n.Pause() }

// InProcessSled is a sled whose agent runs inside the test.
type InProcessSled struct {
	name  string
	agent *sledagenttest.Agent
	proxy *Proxy
}

var _ Sled = (*InProcessSled)(nil)

func (s *InProcessSled) Name() string                { return s.name }
func (s *InProcessSled) ID() uuid.UUID               { return uuid.MustParse(s.agent.Config.SledID) }
func (s *InProcessSled) Agent() sledagenttest.Remote { return s.agent.Remote }
func (s *InProcessSled) Local() *sledagenttest.Agent { return s.agent }
func (s *InProcessSled) Stop()                       { s.agent.Stop() }
func (s *InProcessSled) Kill()                       { s.agent.Stop() }
func (s *InProcessSled) Restart()                    { s.agent.Restart() }
func (s *InProcessSled) Isolate()                    { isolate(s.agent.T(), s.name, s.proxy, true) }
func (s *InProcessSled) Heal()                       { isolate(s.agent.T(), s.name, s.proxy, false) }
func (s *InProcessSled) Resume()                     { s.Pause() }

func (s *InProcessSled) Addr() string {
	if s.proxy != nil {
		return s.proxy.Addr()
	}
	return s.agent.Config.ListenAddress
}

func (s *InProcessSled) Pause() {
	s.agent.T().Fatalf("racktest: %s runs in process and cannot be paused; use the processes backend", s.name)
}

func isolate(t testutil.TB, name string, p *Proxy, cut bool) {
	t.Helper()
	switch {
	case p == nil:
		t.Fatalf("racktest: isolating %s needs Options.SledProxies", name)
	case cut:
		p.Cut()
	default:
		p.Heal()
	}
}

// waitRegistered waits until every sled is known to nexus.
func waitRegistered(t testutil.TB, ds *datastore.DataStore, sleds []Sled) {
	t.Helper()
	testutil.WaitFor(t, registrationBound, func() error {
		known, err := ds.SledList(context.Background())
		if err != nil {
			return err
		}
		ids := map[uuid.UUID]bool{}
		for _, s := range known {
			ids[s.ID] = true
		}
		for _, s := range sleds {
			if !ids[s.ID()] {
				return fmt.Errorf("%s (%s) has not registered with nexus", s.Name(), s.ID())
			}
		}
		return nil
	})
}
