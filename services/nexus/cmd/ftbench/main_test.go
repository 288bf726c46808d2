package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

// mustContain fails the test unless out has every one of want.
func mustContain(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("the report lacks %q:\n%s", w, out)
		}
	}
}

func TestFtbenchMeasuresForceTerminateAndTheFloorOnTheTestServer(t *testing.T) {
	dsn := pgtest.DSN(t) // fails with CI=true when there is no PostgreSQL
	var out bytes.Buffer
	err := run(context.Background(), []string{"--database-url", dsn, "--instances", "8", "--clients", "1,4",
		"--stats-wait", "0s", "--vmm-delay", "1ms"}, &out)
	if err != nil {
		t.Fatalf("ftbench: %v\n%s", err, out.String())
	}
	report := out.String()
	t.Log(report)
	mustContain(t, report, "clients 1\n", "clients 4\n", "force-terminate  n=8 ", "floor UPDATE", "p50", "p99", "max",
		"/s", "force-terminate throughput / floor throughput", "write transactions", "connections opened",
		// The test server does not preload pg_stat_statements: the report
		// says what it could not measure, and why.
		"statements (round trips) per force-terminate not measured", "target, 1 client: p50 <= 2.5 x the floor's p50")
	if strings.Contains(report, "UNEXPECTED ANSWERS") {
		t.Error("force-terminates of distinct running instances did not all answer 200 stopped")
	}
}

func TestFtbenchStartsItsOwnDurableServerAndCountsStatements(t *testing.T) {
	pgtest.RequireServerBinaries(t)
	var out bytes.Buffer
	err := run(context.Background(), []string{"--start-postgres", "--instances", "4", "--clients", "2", "--sleds", "1",
		"--stats-wait", "0s", "--vmm-delay", "1ms"}, &out)
	if err != nil {
		t.Fatalf("ftbench: %v\n%s", err, out.String())
	}
	report := out.String()
	t.Log(report)
	mustContain(t, report, "fsync=on, synchronous_commit=on", "clients 2\n", "statements = round trips", "commit",
		"B WAL (", "(the targets are stated for 1 and 64 clients")
	if strings.Contains(report, "UNEXPECTED ANSWERS") {
		t.Error("force-terminates of distinct running instances did not all answer 200 stopped")
	}
}

func TestFtbenchRefusesBadFlagsNamingThem(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--database-url is required unless --start-postgres"},
		{[]string{"--start-postgres", "--database-url", "postgres://x/y"}, "exclude each other"},
		{[]string{"--start-postgres", "--clients", "1,zero"}, `--clients: "zero"`},
		{[]string{"--start-postgres", "--clients", "0"}, `--clients: "0"`},
		{[]string{"--start-postgres", "--instances", "4", "--clients", "8"}, "8 clients need at least as many instances"},
		{[]string{"--start-postgres", "--sleds", "0"}, "--sleds must be at least 1"},
		{[]string{"--start-postgres", "extra"}, "unexpected arguments"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tc.args, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ftbench %q: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
