package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/services/racktest"
)

// runNexus runs the nexus command line args in process.
func runNexus(args ...string) (string, error) {
	cmd := command()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// N11: `nexus healthcheck`, a container's healthcheck, exits 0 on a ready
// replica's /readyz and an alive one's /healthz, printing the checks, and
// fails on anything but 200 or when nothing answers.
func TestN11_HealthcheckSucceedsOnlyOn200FromTheProbe(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{})
	metrics := r.Nexus(0).MetricsURL()
	for path, want := range map[string]string{"/readyz": `"database":"ok"`, "/healthz": `"alive"`} {
		out, err := runNexus("healthcheck", "--url="+metrics+path)
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("healthcheck of %s: %v\n%s", path, err, out)
		}
	}
	if _, err := runNexus("healthcheck", "--url="+metrics+"/no-such-probe"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("healthcheck of a missing probe: %v; want an error naming the 404", err)
	}
	r.Nexus(0).Stop()
	if out, err := runNexus("healthcheck", "--url="+metrics+"/healthz", "--timeout=1s"); err == nil {
		t.Fatalf("healthcheck of a stopped replica succeeded:\n%s", out)
	}
}

func TestHealthcheckRefusesBadFlagsNamingThem(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"healthcheck", "--url=127.0.0.1:12223/readyz"}, "--url"},
		{[]string{"healthcheck", "--url=ftp://127.0.0.1/readyz"}, "--url"},
		{[]string{"healthcheck", "--url=http://%zz"}, "--url"},
		{[]string{"healthcheck", "--timeout=0s"}, "--timeout"},
		{[]string{"healthcheck", "--timeout=soon"}, "--timeout"},
	} {
		if _, err := runNexus(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("nexus %v: %v; want an error naming %s", c.args, err, c.want)
		}
	}
}
