package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/nexustest"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
)

// TestN5_ARestartedNexusThatCannotReachTheSledUndoesWhatItsDeadRunDid: nexus
// dies with the start saga at a sled-facing node, and the restarted nexus
// cannot reach that sled (a partition, healed once the retried node has
// failed). The retry fails, so the saga unwinds; it must still undo what
// the dead nexus's run of that node may have done. At
// ensure_registered/after that is a VMM registered on the sled: left there,
// it would be a VMM no instance points at.
func TestN5_ARestartedNexusThatCannotReachTheSledUndoesWhatItsDeadRunDid(t *testing.T) {
	bin := buildNexus(t)
	partition := &fault{name: "partitioned",
		whileDown: func(t *testing.T, s *sled, _ string) { s.proxy.cut() },
		afterRestart: func(t *testing.T, s *sled, ds *datastore.DataStore, sagaID uuid.UUID) {
			// Heal once the restarted nexus has tried the sled and failed,
			// so that the undo of that failure reaches it: promptly, since
			// nexus's gRPC connection to the sled retries about 1 s after
			// the refusal and the undo's 5 tries span 1.2-1.5 s; a heal
			// later than that would leave the saga stuck (which is right
			// for a sled that stays unreachable, but not this test).
			testutil.WaitFor(t, settleTimeout, func() error {
				events, err := ds.SagaEvents(bg, sagaID)
				if err != nil {
					return err
				}
				for _, ev := range events {
					if ev.Type == saga.EventFailed {
						return nil
					}
				}
				return fmt.Errorf("saga %s has no failed node yet", sagaID)
			})
			s.proxy.heal()
		}}
	for _, backend := range nexustest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			t.Parallel()
			for _, node := range []string{"ensure_registered", "ensure_running"} {
				for _, at := range []string{"before", "after"} {
					point := crashPoint{Template: sagas.InstanceStart, Node: node, After: at == "after"}
					t.Run(partition.name+"-"+node+"-"+at, func(t *testing.T) {
						if got := crashAndRecover(t, bin, backend, point, partition); !strings.HasPrefix(got, "unwound") {
							t.Fatalf("the saga %s; want it unwound", got)
						}
					})
				}
			}
		})
	}
}

// tcpProxy forwards loopback connections to a target. cut is a partition:
// the port refuses connections and the open ones drop; heal listens again on
// the same port.
type tcpProxy struct {
	t      testing.TB
	addr   string
	target string

	mu    sync.Mutex
	lis   net.Listener
	conns map[net.Conn]bool
}

func startProxy(t testing.TB, addr, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{t: t, addr: addr, target: target, conns: map[net.Conn]bool{}}
	p.heal()
	t.Cleanup(p.cut)
	return p
}

// heal listens on the proxy's address (again).
func (p *tcpProxy) heal() {
	p.t.Helper()
	var lis net.Listener
	testutil.WaitFor(p.t, 5*time.Second, func() (err error) {
		lis, err = net.Listen("tcp", p.addr)
		return err
	})
	p.mu.Lock()
	p.lis = lis
	p.mu.Unlock()
	go p.accept(lis)
}

// cut closes the listener and every forwarded connection.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis != nil {
		p.lis.Close()
		p.lis = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *tcpProxy) accept(lis net.Listener) {
	for {
		in, err := lis.Accept()
		if err != nil {
			return // cut
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		if p.lis != lis { // cut meanwhile
			p.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		p.conns[in], p.conns[out] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			io.Copy(dst, src) //nolint:errcheck // ends when either side closes
			dst.Close()
			src.Close()
		}
		go pipe(out, in)
		go pipe(in, out)
	}
}
