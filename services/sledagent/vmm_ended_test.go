package sledagent_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// The sled remembers how a VMM ended (destroyed, failed or unregistered), so
// that a VMM a racing stop destroyed never reads as "unknown" to nexus,
// which would turn it into a failed instance (SPEC F5, F9). These tests
// cover that memory; vmm_test.go covers the rest of V1-V8.

// runAndStop registers a VMM, runs it and stops it until destroyed, and
// returns its id and the generation of its end. Its updates up to running
// have reached nexus first, whatever happens to nexus afterwards.
func runAndStop(t *testing.T, a *sledagenttest.Agent, n *sledagenttest.NexusReceiver, stopNexus bool) (string, uint64) {
	t.Helper()
	id := a.Register() // starting: generation 2
	a.EnsureState(id, running)
	a.Step(id, false) // running: 3
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sRunning })
	if stopNexus {
		n.Stop() // what follows is queued and retried
	}
	a.EnsureState(id, stopped)
	if got := a.Step(id, true); got != 3 { // stopping 4, stopped 5, destroyed 6
		t.Fatalf("stopping took %d transitions, want 3", got)
	}
	return id, 6
}

func unregister(t *testing.T, a *sledagenttest.Agent, id string) *sledagentv1.VmmRuntime {
	t.Helper()
	resp, err := a.Client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: id})
	if err != nil {
		t.Fatalf("EnsureUnregistered(%s): %v", id, err)
	}
	return resp.GetUpdatedRuntime()
}

// noUpdateAfter checks, once everything published so far has arrived, that
// nexus received nothing about the VMM past generation gen.
func noUpdateAfter(t *testing.T, a *sledagenttest.Agent, n *sledagenttest.NexusReceiver, id string, gen uint64) {
	t.Helper()
	publicationBarrier(t, a, n)
	for _, u := range n.Updates(id) {
		if u.GetRuntime().GetGeneration() > gen {
			t.Fatalf("published %v about VMM %s, past its end at generation %d", u.GetRuntime(), id, gen)
		}
	}
}

// TestV3_AStoppedVMMWhosePublicationIsQueuedAnswersUnregisterWithItsEnd is
// the seed's trap: a stop destroyed the VMM, but nexus has not heard yet
// (its publication is queued and retried). Unregistering it answers the end
// the sled published, same state and generation, never empty ("unknown"),
// which nexus would turn into a failed instance; nothing new is published,
// and the queued end is still delivered.
func TestV3_AStoppedVMMWhosePublicationIsQueuedAnswersUnregisterWithItsEnd(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	id, end := runAndStop(t, a, n, true)

	first := unregister(t, a, id)
	if first.GetState() != sDestroyed || first.GetGeneration() != end {
		t.Fatalf("unregistering a VMM a stop destroyed answered %v, want destroyed at generation %d", first, end)
	}
	if again := unregister(t, a, id); !sameRuntime(again, first) {
		t.Fatalf("unregistering again answered %v, want the same %v", again, first)
	}
	if len(a.Inventory().GetVmms()) != 0 {
		t.Fatal("an ended VMM is listed in the inventory")
	}

	n.Start()
	u := n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sDestroyed })
	if !sameRuntime(u.GetRuntime(), first) {
		t.Fatalf("the queued end %v differs from the unregister's answer %v", u.GetRuntime(), first)
	}
	noUpdateAfter(t, a, n, id, end)
}

// TestV3_AnUnregisterHeldWhileARacingStopDestroysTheVMMAnswersTheStopsEnd
// stages the seed's race exactly: force-terminate's EnsureUnregistered, a
// second stop's EnsureState and the instance watcher's GetVmmState have all
// reached the sled (held by the black hole) when a racing stop destroys the
// VMM, whose publication cannot reach nexus. Let through, none of them says
// "unknown": each answers the stop's end.
func TestV3_AnUnregisterHeldWhileARacingStopDestroysTheVMMAnswersTheStopsEnd(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	id := a.Register()
	a.EnsureState(id, running)
	a.Step(id, false)
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sRunning })
	n.Stop()
	a.EnsureState(id, stopped) // the racing stop, asked before the others arrive

	if _, err := a.Sim.SetBlackHole(ctx, &sledagentv1.SetBlackHoleRequest{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	type answer struct {
		rt  *sledagentv1.VmmRuntime
		err error
	}
	unregistered, stoppedAgain, watched := make(chan answer, 1), make(chan answer, 1), make(chan answer, 1)
	go func() {
		resp, err := a.Client.EnsureUnregistered(callCtx, &sledagentv1.EnsureUnregisteredRequest{VmmId: id})
		unregistered <- answer{resp.GetUpdatedRuntime(), err}
	}()
	a.WaitHeld(sledagentv1.SledAgent_EnsureUnregistered_FullMethodName, id)
	go func() {
		resp, err := a.Client.EnsureState(callCtx, &sledagentv1.EnsureStateRequest{VmmId: id, Target: stopped})
		stoppedAgain <- answer{resp.GetRuntime(), err}
	}()
	a.WaitHeld(sledagentv1.SledAgent_EnsureState_FullMethodName, id)
	go func() {
		resp, err := a.Client.GetVmmState(callCtx, &sledagentv1.GetVmmStateRequest{VmmId: id})
		watched <- answer{resp.GetRuntime(), err}
	}()
	a.WaitHeld(sledagentv1.SledAgent_GetVmmState_FullMethodName, id)

	if got := a.Step(id, true); got != 3 { // stopping, stopped, destroyed: generation 6
		t.Fatalf("the racing stop took %d transitions, want 3", got)
	}
	if _, err := a.Sim.SetBlackHole(ctx, &sledagentv1.SetBlackHoleRequest{Enabled: false}); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan answer{"EnsureUnregistered": unregistered, "EnsureState(stopped)": stoppedAgain,
		"GetVmmState": watched} {
		got := <-ch
		if got.err != nil || got.rt.GetState() != sDestroyed || got.rt.GetGeneration() != 6 {
			t.Errorf("%s after the racing stop: %v, %v; want the stop's end, destroyed at generation 6", name, got.rt, got.err)
		}
	}
	n.Start()
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool {
		return u.GetRuntime().GetState() == sDestroyed && u.GetRuntime().GetGeneration() == 6
	})
	noUpdateAfter(t, a, n, id, 6)
}

// TestV2_StoppingAnEndedVMMIsSatisfiedAndOtherTargetsAreUnreachable: an
// ended VMM has stopped for good. STOPPED answers its end; RUNNING, REBOOT
// and MIGRATION_TARGET are VMM_TARGET_UNREACHABLE saying how it ended, never
// NO_SUCH_VMM, which nexus reads as "the sled forgot it".
func TestV2_StoppingAnEndedVMMIsSatisfiedAndOtherTargetsAreUnreachable(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	stoppedID, stoppedEnd := runAndStop(t, a, n, false)
	unregisteredID := a.Register()
	unregisteredEnd := unregister(t, a, unregisteredID).GetGeneration()

	for id, end := range map[string]uint64{stoppedID: stoppedEnd, unregisteredID: unregisteredEnd} {
		for i := 0; i < 2; i++ {
			if rt := a.EnsureState(id, stopped); rt.GetState() != sDestroyed || rt.GetGeneration() != end {
				t.Fatalf("stopping ended VMM %s answered %v, want destroyed at generation %d", id, rt, end)
			}
		}
		for _, target := range []sledagentv1.VmmTargetState{running, reboot, migrationTarget} {
			_, err := a.Client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: id, Target: target})
			requireReason(t, err, codes.FailedPrecondition, "VMM_TARGET_UNREACHABLE")
			msg := status.Convert(err).Message()
			if want := fmt.Sprintf("has ended (destroyed at generation %d)", end); !strings.Contains(msg, want) {
				t.Fatalf("EnsureState(%s) of ended VMM %s: %q, want it to say it %s", target, id, msg, want)
			}
		}
		noUpdateAfter(t, a, n, id, end)
	}
	if a.Step("", true) != 0 {
		t.Fatal("a request to an ended VMM set a transition going")
	}
}

// TestV4_GetVmmStateOfAnEndedVMMReturnsItsFinalView: the end nexus was
// published, instance and migration sides included, stays readable.
func TestV4_GetVmmStateOfAnEndedVMMReturnsItsFinalView(t *testing.T) {
	n, src, dst, source, target, migration := migrationPair(t)
	before, err := src.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: source})
	if err != nil {
		t.Fatal(err)
	}
	dst.EnsureState(target, migrationTarget)
	dst.Step(target, false)
	src.Step(source, false)
	dst.Step(target, false)
	src.Step(source, false) // the source is destroyed, its guest moved
	u := n.WaitUpdate(source, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sDestroyed })
	got, err := src.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: source})
	if err != nil {
		t.Fatalf("GetVmmState of an ended VMM: %v, want its final view", err)
	}
	if !sameRuntime(got.GetRuntime(), u.GetRuntime()) || got.GetMigrationOut().GetMigrationId() != migration ||
		got.GetMigrationOut().GetState() != sledagentv1.MigrationState_MIGRATION_STATE_COMPLETED ||
		got.GetMigrationOut().GetGeneration() != u.GetMigrationOut().GetGeneration() || got.GetMigrationIn() != nil {
		t.Fatalf("GetVmmState of the migrated-out source: %v; want its final update %v", got, u)
	}
	if got.GetInstanceId() != before.GetInstanceId() {
		t.Fatalf("the final view names instance %q, want %q", got.GetInstanceId(), before.GetInstanceId())
	}
	if len(src.Inventory().GetVmms()) != 0 {
		t.Fatal("the ended source is listed in the inventory")
	}
}

// TestV1_RegisteringAnEndedVMMAgainDoesNotBringItBack: a saga re-run after
// a crash registers a VMM that has since been terminated. The sled answers
// its end and launches nothing; another instance still cannot have the id.
func TestV1_RegisteringAnEndedVMMAgainDoesNotBringItBack(t *testing.T) {
	for name, end := range map[string]func(a *sledagenttest.Agent, id string){
		"stopped": func(a *sledagenttest.Agent, id string) {
			a.EnsureState(id, running)
			a.Step(id, false)
			a.EnsureState(id, stopped)
			a.Step(id, true)
		},
		"unregistered": func(a *sledagenttest.Agent, id string) { unregister(t, a, id) },
	} {
		t.Run(name, func(t *testing.T) {
			n := sledagenttest.StartNexus(t)
			a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
			req := &sledagentv1.EnsureRegisteredRequest{VmmId: uuid.NewString(), InstanceId: uuid.NewString(), Spec: spec(),
				InitialRuntime: &sledagentv1.VmmRuntime{Generation: 4}}
			if _, err := a.Client.EnsureRegistered(ctx, req); err != nil {
				t.Fatal(err)
			}
			end(a, req.VmmId)
			final, err := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: req.VmmId})
			if err != nil || final.GetRuntime().GetState() != sDestroyed {
				t.Fatalf("the VMM did not end: %v, %v", final, err)
			}
			publicationBarrier(t, a, n)
			published := len(n.Updates(req.VmmId))

			again, err := a.Client.EnsureRegistered(ctx, req)
			if err != nil || !sameRuntime(again.GetRuntime(), final.GetRuntime()) {
				t.Fatalf("registering the ended VMM again: %v, %v; want its end %v", again, err, final.GetRuntime())
			}
			other := &sledagentv1.EnsureRegisteredRequest{VmmId: req.VmmId, InstanceId: uuid.NewString(), Spec: spec()}
			_, err = a.Client.EnsureRegistered(ctx, other)
			requireReason(t, err, codes.AlreadyExists, "VMM_ALREADY_EXISTS")

			for _, v := range a.Inventory().GetVmms() {
				if v.GetVmmId() == req.VmmId {
					t.Fatalf("registering an ended VMM listed it again: %v", v)
				}
			}
			if rt := a.EnsureState(req.VmmId, stopped); !sameRuntime(rt, final.GetRuntime()) {
				t.Fatalf("after registering again, the VMM is %v, want still its end", rt)
			}
			if a.Step("", true) != 0 {
				t.Fatal("registering an ended VMM launched something")
			}
			publicationBarrier(t, a, n)
			if got := len(n.Updates(req.VmmId)); got != published {
				t.Fatalf("registering an ended VMM published %d updates", got-published)
			}
		})
	}
}

// TestV7_ForgetVmmMakesAnEndedVMMUnknown: the ForgetVmm fault stands for a
// sled-agent restart, which remembers no ended VMM and loses undelivered
// updates. Afterwards the VMM is unknown, exactly as after a restart.
func TestV7_ForgetVmmMakesAnEndedVMMUnknown(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	id, _ := runAndStop(t, a, n, true) // its end is queued, not delivered

	if _, err := a.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: id}); err != nil {
		t.Fatalf("forgetting an ended VMM: %v", err)
	}
	_, err := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: id})
	requireNoSuchVMM(t, err)
	_, err = a.Client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: id, Target: stopped})
	requireNoSuchVMM(t, err)
	if rt := unregister(t, a, id); rt != nil {
		t.Fatalf("unregistering a forgotten VMM answered %v, want empty", rt)
	}
	_, err = a.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: id})
	requireNoSuchVMM(t, err)

	n.Start()
	publicationBarrier(t, a, n)
	ups := n.Updates(id)
	if last := ups[len(ups)-1].GetRuntime(); last.GetState() != sRunning {
		t.Fatalf("nexus was told %v about a forgotten VMM; its queued end must be lost as in a restart", last)
	}
}

// TestV7_RestartedAgentRemembersNoEndedVMM: the memory of ended VMMs is in
// memory only.
func TestV7_RestartedAgentRemembersNoEndedVMM(t *testing.T) {
	a := sledagenttest.Start(t, sledagenttest.Explicit)
	id := a.Register()
	if rt := unregister(t, a, id); rt.GetState() != sDestroyed {
		t.Fatalf("unregister answered %v", rt)
	}
	a.Restart()
	if rt := unregister(t, a, id); rt != nil {
		t.Fatalf("a restarted agent answered %v for a VMM that ended before the restart, want empty", rt)
	}
	_, err := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: id})
	requireNoSuchVMM(t, err)
}

// TestV7_GetRpcFaultsListsTheCallsHeldByTheBlackHole: a test can see which
// calls wait in the black hole (method and VMM), a caller that gives up
// leaves it, and lifting the hole lets the others complete.
func TestV7_GetRpcFaultsListsTheCallsHeldByTheBlackHole(t *testing.T) {
	a := sledagenttest.Start(t, sledagenttest.Explicit)
	id := a.Register()
	if f := a.RPCFaults(); f.GetBlackHole() || f.GetLatency().AsDuration() != 0 || len(f.GetHeldCalls()) != 0 {
		t.Fatalf("faults of a fresh agent: %v", f)
	}
	if _, err := a.Sim.SetRpcLatency(ctx, &sledagentv1.SetRpcLatencyRequest{Latency: durationpb.New(time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sim.SetBlackHole(ctx, &sledagentv1.SetBlackHoleRequest{Enabled: true}); err != nil {
		t.Fatal(err)
	}

	state, inventory := make(chan error, 1), make(chan error, 1)
	go func() {
		resp, err := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: id})
		if err == nil && resp.GetRuntime().GetState() != sStarting {
			err = fmt.Errorf("answered %v", resp)
		}
		state <- err
	}()
	a.WaitHeld(sledagentv1.SledAgent_GetVmmState_FullMethodName, id)
	go func() {
		_, err := a.Client.GetInventory(ctx, &sledagentv1.GetInventoryRequest{})
		inventory <- err
	}()
	a.WaitHeld(sledagentv1.SledAgent_GetInventory_FullMethodName, "")
	giveUpCtx, giveUp := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		_, err := a.Client.EnsureUnregistered(giveUpCtx, &sledagentv1.EnsureUnregisteredRequest{VmmId: id})
		gaveUp <- err
	}()
	a.WaitHeld(sledagentv1.SledAgent_EnsureUnregistered_FullMethodName, id)

	f := a.RPCFaults()
	want := []string{
		sledagentv1.SledAgent_GetVmmState_FullMethodName + " " + id,
		sledagentv1.SledAgent_GetInventory_FullMethodName + " ",
		sledagentv1.SledAgent_EnsureUnregistered_FullMethodName + " " + id,
	}
	if got := heldCalls(f); !f.GetBlackHole() || f.GetLatency().AsDuration() != time.Millisecond || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("GetRpcFaults: black hole %v, latency %s, held %q; want open, 1ms, %q",
			f.GetBlackHole(), f.GetLatency().AsDuration(), got, want)
	}

	giveUp()
	if err := <-gaveUp; status.Code(err) != codes.Canceled {
		t.Fatalf("a call given up in the black hole: %v, want CANCELED", err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := heldCalls(a.RPCFaults()); len(got) != 2 {
			return fmt.Errorf("held %q, want the call given up gone", got)
		}
		return nil
	})

	if _, err := a.Sim.SetBlackHole(ctx, &sledagentv1.SetBlackHoleRequest{Enabled: false}); err != nil {
		t.Fatal(err)
	}
	if err := <-state; err != nil {
		t.Fatalf("GetVmmState let through: %v", err)
	}
	if err := <-inventory; err != nil {
		t.Fatalf("GetInventory let through: %v", err)
	}
	if f := a.RPCFaults(); f.GetBlackHole() || len(f.GetHeldCalls()) != 0 {
		t.Fatalf("after lifting the hole and the calls completing: %v", f)
	}
	if len(a.Inventory().GetVmms()) != 1 {
		t.Fatal("the unregister given up in the black hole still ran")
	}
}

func heldCalls(f *sledagentv1.GetRpcFaultsResponse) []string {
	var out []string
	for _, c := range f.GetHeldCalls() {
		out = append(out, c.GetMethod()+" "+c.GetVmmId())
	}
	return out
}
