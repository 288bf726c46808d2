package racktest

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/rackplane/rackplane/pkg/testutil"
)

// Proxy forwards loopback connections to a target, so a test can cut the
// link like a network partition: Cut refuses new connections and drops the
// open ones; Heal listens again on the same address.
type Proxy struct {
	t      testutil.TB
	addr   string
	target string

	mu    sync.Mutex
	lis   net.Listener
	conns map[net.Conn]bool
}

// StartProxy forwards addr to target until the test ends.
func StartProxy(t testutil.TB, addr, target string) *Proxy {
	t.Helper()
	p := &Proxy{t: t, addr: addr, target: target, conns: map[net.Conn]bool{}}
	p.Heal()
	t.Cleanup(p.Cut)
	return p
}

// Addr is where the proxy listens.
func (p *Proxy) Addr() string { return p.addr }

// Heal listens on the proxy's address (again).
func (p *Proxy) Heal() {
	p.t.Helper()
	p.mu.Lock()
	open := p.lis != nil
	p.mu.Unlock()
	if open {
		return
	}
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

// Cut closes the listener and every forwarded connection.
func (p *Proxy) Cut() {
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

func (p *Proxy) accept(lis net.Listener) {
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
