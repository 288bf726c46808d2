package main

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

// ciRunBound bounds the CI run, once nexus and sled-agent are built: 45 s
// of calls, the settling and the check.
const ciRunBound = 3 * time.Minute

// TestR1_InstanceOperationsStayLinearizableUnderReplicaAndSledFaults is the
// bounded run of the chaos harness CI makes: 8 clients for 45 s through 3
// replicas while replicas are killed, sled-agents killed and paused, sleds
// cut off from nexus and replicas from the database, and one replica is
// expunged halfway; the history must be linearizable and every invariant
// hold. STRESS_SEED replays a failed run's seed.
func TestR1_InstanceOperationsStayLinearizableUnderReplicaAndSledFaults(t *testing.T) {
	dsn := pgtest.DSN(t)
	// Built before the clock starts (once per test binary): the run then
	// finds them built.
	racktest.Build(t, racktest.NexusBinary)
	racktest.Build(t, racktest.SledAgentBinary)
	// Kept when the run fails, for the history and its visualization.
	out, err := os.MkdirTemp("", "chaos-r1-")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--dsn", dsn, "--duration", "45s", "--clients", "8", "--instances", "5",
		"--faults", "replica-kill,sled-kill,sled-pause,partition,db-partition", "--out", out,
		"--fault-gap", "3s", "--fault-hold", "4s", "--settle-timeout", "60s"}
	ctx, cancel := context.WithTimeout(context.Background(), ciRunBound)
	defer cancel()
	var report, progress bytes.Buffer
	err = run(ctx, args, &report, &progress)
	t.Log(progress.String())
	t.Log(report.String())
	if err != nil {
		// The error names the seed, and the history and visualization
		// files the run wrote into out.
		t.Fatalf("chaos %s: %v\n(kept: %s)", strings.Join(args, " "), err, out)
	}
	os.RemoveAll(out)
	for _, want := range []string{"seed: ", "Operations (ok / refused / indeterminate)", "Faults injected", "Linearizability (R1): ok",
		"Invariants", "expunged; ", "ok    " + invExpunged, "PASS"} {
		if !strings.Contains(report.String(), want) {
			t.Errorf("the summary lacks %q", want)
		}
	}
}

func TestChaosRefusesBadFlagsNamingThem(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--faults", "replica-kill,meteor"}, "", `--faults: "meteor" is none of`},
		{[]string{"--ops", "start,delete"}, "", `--ops: "delete" is none of`},
		{[]string{"--clients", "0"}, "", "--clients must be at least 1"},
		{[]string{"--instances", "0"}, "", "--instances must be at least 1"},
		{[]string{"--duration", "0s"}, "", "--duration must be positive"},
		{[]string{"--think", "-1s"}, "", "--think must not be negative"},
		{[]string{"extra"}, "", "unexpected arguments"},
		{[]string{"--faults", "db-failover", "--dsn", "postgres://u@h/db"}, "", "--faults db-failover and --dsn"},
		{nil, "x", `STRESS_SEED: "x" is not an unsigned integer`},
	} {
		var out bytes.Buffer
		_, err := parseFlags(tc.args, func(string) string { return tc.env }, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("chaos %q (STRESS_SEED=%q): %v, want an error containing %q", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestChaosTakesItsSeedFromSTRESS_SEEDUnlessGiven(t *testing.T) {
	env := func(string) string { return "42" }
	var out bytes.Buffer
	if o, err := parseFlags(nil, env, &out); err != nil || o.seed != 42 {
		t.Errorf("STRESS_SEED=42: seed %d, %v; want 42", o.seed, err)
	}
	if o, err := parseFlags([]string{"--seed", "7"}, env, &out); err != nil || o.seed != 7 {
		t.Errorf("--seed 7 with STRESS_SEED=42: seed %d, %v; want 7", o.seed, err)
	}
	if o, err := parseFlags([]string{"--faults", ""}, env, &out); err != nil || len(o.faults) != 0 {
		t.Errorf(`--faults "": %v, %v; want no faults`, o.faults, err)
	}
}

// TestChaosInjectsDatabaseFailoversOnlyWhenAskedFor: db-failover is a fault
// --faults accepts, but the default list (and so a run that names none)
// leaves it out: its formation and rejoins take minutes.
func TestChaosInjectsDatabaseFailoversOnlyWhenAskedFor(t *testing.T) {
	var out bytes.Buffer
	o, err := parseFlags(nil, func(string) string { return "" }, &out)
	if err != nil || slices.Contains(o.faults, faultDBFailover) {
		t.Errorf("no --faults: %v, %v; want the default faults, without db-failover", o.faults, err)
	}
	o, err = parseFlags([]string{"--faults", "db-failover,replica-kill"}, func(string) string { return "" }, &out)
	if err != nil || !slices.Equal(o.faults, []faultKind{faultDBFailover, faultReplicaKill}) {
		t.Errorf("--faults db-failover,replica-kill: %v, %v; want both", o.faults, err)
	}
}
