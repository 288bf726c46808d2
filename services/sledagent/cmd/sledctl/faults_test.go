package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// operator runs sledctl against one sled-agent.
type operator struct {
	t    *testing.T
	addr string
}

func operatorOf(t *testing.T, a *sledagenttest.Agent) operator {
	return operator{t: t, addr: a.Server.Addr()}
}

func (o operator) run(args ...string) (string, error) {
	o.t.Helper()
	return run(o.t, append([]string{"--addr", o.addr}, args...)...)
}

// must runs sledctl and fails the test unless it succeeds.
func (o operator) must(args ...string) string {
	o.t.Helper()
	out, err := o.run(args...)
	if err != nil {
		o.t.Fatal(err)
	}
	return out
}

// vmmState is the VMM's state as `sledctl inventory` shows it, "" when the
// sled does not list it.
func (o operator) vmmState(vmmID string) string {
	o.t.Helper()
	for _, line := range strings.Split(o.must("inventory"), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == vmmID {
			return f[2]
		}
	}
	return ""
}

// zoneResult is the zone's RESULT column in `sledctl inventory` ("ok" or
// "ERROR ..."), "" when the last pass does not list it. A zone no longer in
// the ledgered config has no address, so the column is found by its text.
func (o operator) zoneResult(zoneID string) string {
	o.t.Helper()
	for _, line := range strings.Split(o.must("inventory"), "\n") {
		if !strings.HasPrefix(line, zoneID+" ") {
			continue
		}
		if i := strings.Index(line, "ERROR "); i >= 0 {
			return line[i:]
		}
		return strings.TrimSpace(line[strings.LastIndex(line, " "):])
	}
	return ""
}

// registerInstance registers a VMM of a new instance, as nexus would.
func registerInstance(t *testing.T, a *sledagenttest.Agent) (vmmID, instanceID string) {
	t.Helper()
	vmmID, instanceID = uuid.NewString(), uuid.NewString()
	if _, err := a.Client.EnsureRegistered(context.Background(), &sledagentv1.EnsureRegisteredRequest{
		VmmId: vmmID, InstanceId: instanceID,
		Spec: &sledagentv1.VmmSpec{Ncpus: 1, MemoryBytes: 1 << 30, Hostname: "guest"},
	}); err != nil {
		t.Fatal(err)
	}
	return vmmID, instanceID
}

func quickVMMs(c *config.Config) { c.VMMTransitionDelay = config.Duration(5 * time.Millisecond) }

func TestV7_OperatorWedgesAnInstancesStopAndClearingFaultsReleasesIt(t *testing.T) {
	a := sledagenttest.Start(t, quickVMMs)
	op := operatorOf(t, a)
	vmmID, instanceID := registerInstance(t, a)

	out := op.must("fault", "vmm", "hang-stop", "--instance", instanceID)
	if want := fmt.Sprintf("VMM %s of instance %s: its stop now hangs until \"sledctl fault clear\"\n", vmmID, instanceID); out != want {
		t.Fatalf("hang-stop said %q, want %q", out, want)
	}
	a.EnsureState(vmmID, sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if s := op.vmmState(vmmID); s != "stopping" {
			return fmt.Errorf("VMM is %q, waiting for stopping", s)
		}
		return nil
	})
	// Stopping has one transition left, stopped; nothing can complete it.
	if out := op.must("vmm", "step", vmmID, "--drain"); out != "0 VMM transitions completed\n" {
		t.Fatalf("stepping a wedged VMM: %q, want no transition", out)
	}
	if s := op.vmmState(vmmID); s != "stopping" {
		t.Fatalf("a wedged VMM is %q, want still stopping", s)
	}

	op.must("fault", "clear")
	testutil.WaitFor(t, 5*time.Second, func() error {
		if s := op.vmmState(vmmID); s != "" {
			return fmt.Errorf("VMM is %q, waiting for its stop to finish and the sled to drop it", s)
		}
		return nil
	})
}

func TestV7_ForgetAllEmptiesTheSledsVMMs(t *testing.T) {
	a := sledagenttest.Start(t)
	op := operatorOf(t, a)
	registerInstance(t, a)
	registerInstance(t, a)

	out := op.must("fault", "vmm", "forget", "--all")
	if !strings.Contains(out, "forgot its 2 VMMs without telling nexus") {
		t.Fatalf("forget --all said %q", out)
	}
	if inv := op.must("inventory"); !strings.Contains(inv, "no VMMs") {
		t.Fatalf("inventory after forget --all still lists VMMs:\n%s", inv)
	}
	if len(a.Inventory().GetVmms()) != 0 {
		t.Fatal("the sled still runs VMMs")
	}
}

func TestV7_FailEnsureStateFailsTheNextCallsWithTheChosenCode(t *testing.T) {
	a := sledagenttest.Start(t)
	op := operatorOf(t, a)
	vmmID, instanceID := registerInstance(t, a)

	out := op.must("fault", "vmm", "fail-ensure-state", "--instance", instanceID, "--count", "1", "--code", "unavailable", "--message", "propolis is away")
	if !strings.Contains(out, "the next 1 EnsureState calls for VMM "+vmmID) || !strings.Contains(out, "Unavailable") {
		t.Fatalf("fail-ensure-state said %q", out)
	}
	_, err := a.Client.EnsureState(context.Background(), &sledagentv1.EnsureStateRequest{VmmId: vmmID, Target: sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "propolis is away") {
		t.Fatalf("first EnsureState: %v, want UNAVAILABLE with the operator's message", err)
	}
	a.EnsureState(vmmID, sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED)
}

func TestV7_BlackHoleMakesSledAgentCallsTimeOutUntilLifted(t *testing.T) {
	a := sledagenttest.Start(t)
	op := operatorOf(t, a)

	op.must("fault", "rpc", "black-hole", "on")
	_, err := op.run("--timeout", "300ms", "inventory")
	if want := "did not answer within 300ms (--timeout)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("inventory in a black hole: %v, want %q", err, want)
	}
	// Fault commands still answer: the black hole never swallows them.
	if out := op.must("fault", "rpc", "show"); !strings.Contains(out, "black hole  on") {
		t.Fatalf("rpc show:\n%s", out)
	}
	op.must("fault", "rpc", "black-hole", "off")
	op.must("--timeout", "5s", "inventory")

	op.must("fault", "rpc", "latency", "20ms")
	var faults struct {
		BlackHole bool   `json:"black_hole"`
		Latency   string `json:"latency"`
	}
	if err := json.Unmarshal([]byte(op.must("fault", "rpc", "show", "--output", "json")), &faults); err != nil {
		t.Fatal(err)
	}
	if faults.BlackHole || faults.Latency != "0.020s" {
		t.Fatalf("rpc show --output json: %+v, want no black hole and 20ms", faults)
	}
}

// Z5: a zone whose halt hangs stays, partially shut down, for as long as
// the operator holds it, and goes once released.
func TestZ5_OperatorHangsAZonesShutdownUntilReleased(t *testing.T) {
	a := sledagenttest.Start(t, func(c *config.Config) {
		c.ZoneShutdownTimeout = config.Duration(200 * time.Millisecond)
		c.ZoneStopTimeout = config.Duration(100 * time.Millisecond)
	})
	op := operatorOf(t, a)
	zone := a.Zone(sledagentv1.ZoneKind_ZONE_KIND_CRUCIBLE, 1)
	a.Ensure(1, zone)
	a.WaitReconciled(1, sledagenttest.AllOK)

	out := op.must("fault", "zone", "hang-shutdown", zone.Id)
	if !strings.Contains(out, "halting zone "+zone.Id+" now hangs") {
		t.Fatalf("hang-shutdown said %q", out)
	}
	a.Ensure(2)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if r := op.zoneResult(zone.Id); !strings.HasPrefix(r, "ERROR partially shut down at halt and remove") {
			return fmt.Errorf("zone result %q, waiting for its halt to time out", r)
		}
		return nil
	})

	op.must("fault", "zone", "release-shutdown", zone.Id)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if r := op.zoneResult(zone.Id); r != "" {
			return fmt.Errorf("zone result %q, waiting for the released zone to go", r)
		}
		return nil
	})
}

// Z5: the walkthrough's zone that refuses to die: its halt fails with the
// operator's message until the faults are cleared.
func TestZ5_OperatorMakesAZoneRefuseToDieUntilFaultsAreCleared(t *testing.T) {
	a := sledagenttest.Start(t)
	op := operatorOf(t, a)
	zone := a.Zone(sledagentv1.ZoneKind_ZONE_KIND_NEXUS, 1)
	a.Ensure(1, zone)
	a.WaitReconciled(1, sledagenttest.AllOK)

	op.must("fault", "zone", "fail-shutdown", zone.Id, "--count", "1000", "--message", "zone refuses to die")
	a.Ensure(2)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if r := op.zoneResult(zone.Id); !strings.HasPrefix(r, "ERROR partially shut down at halt and remove") || !strings.HasSuffix(r, "zone refuses to die") {
			return fmt.Errorf("zone result %q, waiting for the failed halt", r)
		}
		return nil
	})
	op.must("fault", "clear")
	if out := op.must("reconciler", "poke"); !strings.HasPrefix(out, "reconciler poked") {
		t.Fatalf("reconciler poke said %q", out)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if r := op.zoneResult(zone.Id); r != "" {
			return fmt.Errorf("zone result %q, waiting for the zone to go", r)
		}
		return nil
	})
}

func TestV6_OperatorStepsAnExplicitHypervisor(t *testing.T) {
	a := sledagenttest.Start(t)
	op := operatorOf(t, a)
	op.must("hypervisor", "mode", "explicit")
	vmmID, _ := registerInstance(t, a)
	a.EnsureState(vmmID, sledagentv1.VmmTargetState_VMM_TARGET_STATE_RUNNING)
	if s := op.vmmState(vmmID); s != "starting" {
		t.Fatalf("VMM is %q before a step, want starting", s)
	}
	if out := op.must("vmm", "step", vmmID); out != "1 VMM transitions completed\n" {
		t.Fatalf("vmm step said %q", out)
	}
	if s := op.vmmState(vmmID); s != "running" {
		t.Fatalf("VMM is %q after a step, want running", s)
	}
}

// SPEC 7: bad input is refused before anything is sent, naming the field;
// what only the sled can judge is refused by the sled, naming the field too.
func TestV7_BadFaultInputIsRefusedNamingTheField(t *testing.T) {
	a := sledagenttest.Start(t)
	op := operatorOf(t, a)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"fault", "vmm", "hang-stop", "nope"}, `vmm_id: "nope" is not a UUID`},
		{[]string{"fault", "vmm", "hang-stop", "--instance", "nope"}, `--instance: "nope" is not a UUID`},
		{[]string{"fault", "vmm", "hang-stop"}, "give VMM_ID or --instance INSTANCE_ID"},
		{[]string{"fault", "vmm", "hang-stop", uuid.NewString(), "--instance", uuid.NewString()}, "not both"},
		{[]string{"fault", "vmm", "forget", "--all", uuid.NewString()}, "only one"},
		{[]string{"fault", "vmm", "fail-ensure-state", "--code", "sometimes"}, `code: "sometimes" is not a gRPC code`},
		{[]string{"fault", "vmm", "fail-ensure-state", "--code", "not_found"}, "code: 5 is not a gRPC error code other than OK and NOT_FOUND"},
		{[]string{"fault", "vmm", "fail-ensure-state", "--count", "0"}, "count: must be at least 1"},
		{[]string{"fault", "zone", "fail-start", "zone-1"}, `zone_id: "zone-1" is not a UUID`},
		{[]string{"fault", "zone", "fail-shutdown", "--step", "nap"}, `step: "nap" is not one of untrack-metrics, halt-and-remove, clean-up`},
		{[]string{"fault", "zone", "latency", "soon"}, `latency: "soon" is not a duration`},
		{[]string{"fault", "rpc", "latency", "--", "-1s"}, "latency: -1s must not be negative"},
		{[]string{"fault", "rpc", "black-hole", "maybe"}, `enabled: "maybe" is not on or off`},
		{[]string{"hypervisor", "mode", "fast"}, `mode: "fast" is not auto or explicit`},
	} {
		_, err := op.run(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "sledctl: ") {
			t.Errorf("sledctl %s: %v, want an error containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
	stranger := uuid.NewString()
	_, err := op.run("fault", "vmm", "hang-stop", "--instance", stranger)
	if want := fmt.Sprintf("--instance: sled %s runs no VMM of instance %s", a.Config.SledID, stranger); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("hang-stop of an instance the sled does not run: %v, want %q", err, want)
	}
}

func TestV7_FaultCommandsSayWhenTheSledInjectsNoFaults(t *testing.T) {
	a := sledagenttest.Start(t, func(c *config.Config) { c.FaultInjection = false })
	_, err := operatorOf(t, a).run("fault", "clear")
	if want := "injects no faults: it runs with fault_injection off"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("fault clear on a sled without fault injection: %v, want %q", err, want)
	}
}
