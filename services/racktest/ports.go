package racktest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/rackplane/rackplane/pkg/testutil"
)

// handedOut are the ports FreeAddrs gave out in this test process: tests
// run in parallel and bind their ports later, so a port once handed out is
// never drawn again.
var handedOut = struct {
	sync.Mutex
	ports map[string]bool
}{ports: map[string]bool{}}

func claimPort(addr string) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports[addr] {
		return false
	}
	handedOut.ports[addr] = true
	return true
}

// FreeAddrs picks n distinct free loopback addresses for members to listen
// on, the same ones across their restarts. They are drawn below the
// kernel's ephemeral range, so that no outgoing connection and no listener
// on port 0 (other tests run alongside) can take one while its member is
// down; the ports the repository's defaults use (12220-12345) are below
// the range drawn from.
func FreeAddrs(t testutil.TB, n int) []string {
	t.Helper()
	low := 32768
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 16000 {
				low = v
			}
		}
	}
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries == 1000 {
			t.Fatalf("no free port below %d after %d tries", low, tries)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", low-15000+rand.IntN(15000))
		if !claimPort(addr) {
			continue // handed to a parallel test already, which may not have bound it yet
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken; draw again
		}
		defer l.Close() // held until all n are drawn, so they differ
		out = append(out, addr)
	}
	return out
}
