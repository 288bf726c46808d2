package sledagenttest

import (
	"google.golang.org/grpc"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/pkg/testutil"
)

// Remote is a sled-agent reached over gRPC, wherever it runs (in the test,
// or as its own process), with the calls tests make of it: each fails the
// test on error.
type Remote struct {
	t      testutil.TB
	Client sledagentv1.SledAgentClient
	Sim    sledagentv1.SledAgentSimClient
}

// NewRemote returns the helpers over a connection to an agent.
func NewRemote(t testutil.TB, conn grpc.ClientConnInterface) Remote {
	return Remote{t: t, Client: sledagentv1.NewSledAgentClient(conn), Sim: sledagentv1.NewSledAgentSimClient(conn)}
}

// DialAgent connects to the agent of sled at addr as the test's operator
// (the harness's clients are the operator: S4), over mutual TLS of the
// test's rack CA; the connection closes when the test ends.
func DialAgent(t testutil.TB, addr, sled string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpcconn.Dial(addr, rackpkitest.For(t).Operator(), rackpki.Identity{Kind: rackpki.Sled, ID: sled}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// T is the test the helpers fail.
func (r Remote) T() testutil.TB { return r.t }
