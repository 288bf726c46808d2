// Package rackpkitest gives tests a rack CA of their own and the member
// directories rack setup would write, so that every test rack speaks
// mutual TLS as a real one does (S2): there is no plaintext mode.
package rackpkitest

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/testutil"
)

// CA is a test's rack CA, with its files in the test's temporary directory.
type CA struct {
	t   testutil.TB
	ca  *rackpki.CA
	dir string
	n   atomic.Int64

	operatorOnce sync.Once
	operator     rackpki.Trust
}

// New makes a CA of its own, for a test that needs a second rack or a
// foreign one.
func New(t testutil.TB) *CA {
	t.Helper()
	ca, err := rackpki.NewCA(t.Name(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &CA{t: t, ca: ca, dir: t.TempDir()}
}

var (
	mu     sync.Mutex
	byTest = map[testutil.TB]*CA{}
)

// For is the test's rack CA: every member a test starts (sled-agents,
// replicas, the harness's own clients) shares it, as one rack's do.
func For(t testutil.TB) *CA {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if ca, ok := byTest[t]; ok {
		return ca
	}
	ca := New(t)
	byTest[t] = ca
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		delete(byTest, t)
	})
	return ca
}

// CA is the certificate authority itself, for tests that issue by hand.
func (c *CA) CA() *rackpki.CA { return c.ca }

// Member issues id a certificate and returns the directory holding it, the
// CA's certificate and its key (a member's tls_dir).
func (c *CA) Member(id rackpki.Identity) string {
	c.t.Helper()
	dir := filepath.Join(c.dir, fmt.Sprintf("%s-%s-%d", id.Kind, id.ID, c.n.Add(1)))
	c.WriteMember(dir, id)
	return dir
}

// WriteMember issues id a certificate into dir.
func (c *CA) WriteMember(dir string, id rackpki.Identity) {
	c.t.Helper()
	if err := rackpki.WriteMember(dir, c.ca, id, time.Now(), "127.0.0.1", "localhost"); err != nil {
		c.t.Fatal(err)
	}
}

// Trust is id's trust, loaded from a member directory.
func (c *CA) Trust(id rackpki.Identity) rackpki.Trust {
	c.t.Helper()
	trust, err := rackpki.LoadDir(c.Member(id))
	if err != nil {
		c.t.Fatal(err)
	}
	return trust
}

// Operator is the trust of the test's operator, who may call any
// sled-agent and read any replica's health (S4).
func (c *CA) Operator() rackpki.Trust {
	c.t.Helper()
	c.operatorOnce.Do(func() { c.operator = c.Trust(rackpki.Identity{Kind: rackpki.Operator, ID: "test"}) })
	return c.operator
}

// OperatorDir is the operator's member directory (sledctl's --tls-dir).
func (c *CA) OperatorDir() string {
	c.t.Helper()
	return c.Member(rackpki.Identity{Kind: rackpki.Operator, ID: "test"})
}
