package sledagenttest

import (
	"google.golang.org/grpc"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
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

// T is the test the helpers fail.
func (r Remote) T() testutil.TB { return r.t }
