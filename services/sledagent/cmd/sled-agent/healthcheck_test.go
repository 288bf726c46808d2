package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

// runCommand runs the sled-agent command line args in process.
func runCommand(args ...string) (string, error) {
	cmd := command()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// N11: `sled-agent healthcheck`, a container's healthcheck, succeeds while
// the agent serves, asked as the sled itself or as the operator, and fails
// once it has stopped, or when another sled answers at the address.
func TestN11_HealthcheckSucceedsOnlyWhileTheSledAgentServes(t *testing.T) {
	a := sledagenttest.Start(t)
	addr := a.Server.Addr()
	operator := rackpkitest.For(t).OperatorDir()
	for who, dir := range map[string]string{"the sled itself": a.Config.TLSDir, "the operator": operator} {
		out, err := runCommand("healthcheck", "--addr="+addr, "--tls-dir="+dir)
		if err != nil || !strings.Contains(out, "SERVING") {
			t.Fatalf("healthcheck as %s: %v\n%s", who, err, out)
		}
	}
	// A sled asking with its own identity expects to find itself there.
	other := rackpkitest.For(t).Member(rackpki.Identity{Kind: rackpki.Sled, ID: uuid.NewString()})
	if out, err := runCommand("healthcheck", "--addr="+addr, "--tls-dir="+other); err == nil {
		t.Fatalf("healthcheck as another sled succeeded against sled %s:\n%s", a.Config.SledID, out)
	}
	a.Stop()
	if out, err := runCommand("healthcheck", "--addr="+addr, "--tls-dir="+a.Config.TLSDir, "--timeout=1s"); err == nil {
		t.Fatalf("healthcheck of a stopped agent succeeded:\n%s", out)
	}
}

func TestHealthcheckRefusesBadFlagsNamingThem(t *testing.T) {
	dir := sledagenttest.Config(t).TLSDir
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"healthcheck"}, "--tls-dir"},
		{[]string{"healthcheck", "--tls-dir=" + t.TempDir()}, "--tls-dir"},
		{[]string{"healthcheck", "--tls-dir=" + dir, "--timeout=0s"}, "--timeout"},
		{[]string{"healthcheck", "--tls-dir=" + dir, "--timeout=soon"}, "--timeout"},
	} {
		if _, err := runCommand(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("sled-agent %v: %v; want an error naming %s", c.args, err, c.want)
		}
	}
}
