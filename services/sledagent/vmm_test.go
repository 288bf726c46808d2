package sledagent_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

const (
	running         = sledagentv1.VmmTargetState_VMM_TARGET_STATE_RUNNING
	stopped         = sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED
	reboot          = sledagentv1.VmmTargetState_VMM_TARGET_STATE_REBOOT
	migrationTarget = sledagentv1.VmmTargetState_VMM_TARGET_STATE_MIGRATION_TARGET

	sStarting  = sledagentv1.VmmState_VMM_STATE_STARTING
	sRunning   = sledagentv1.VmmState_VMM_STATE_RUNNING
	sStopping  = sledagentv1.VmmState_VMM_STATE_STOPPING
	sStopped   = sledagentv1.VmmState_VMM_STATE_STOPPED
	sRebooting = sledagentv1.VmmState_VMM_STATE_REBOOTING
	sMigrating = sledagentv1.VmmState_VMM_STATE_MIGRATING
	sFailed    = sledagentv1.VmmState_VMM_STATE_FAILED
	sDestroyed = sledagentv1.VmmState_VMM_STATE_DESTROYED
)

func spec() *sledagentv1.VmmSpec {
	return &sledagentv1.VmmSpec{Ncpus: 2, MemoryBytes: 4 << 30, Hostname: "guest"}
}

// sameRuntime reports whether two runtimes are the same state at the same
// generation and time.
func sameRuntime(a, b *sledagentv1.VmmRuntime) bool {
	return a != nil && b != nil && a.GetState() == b.GetState() && a.GetGeneration() == b.GetGeneration() &&
		a.GetTimeUpdated().AsTime().Equal(b.GetTimeUpdated().AsTime())
}

func requireNoSuchVMM(t *testing.T, err error) {
	t.Helper()
	requireReason(t, err, codes.NotFound, "NO_SUCH_VMM")
}

// states returns the published states of a VMM, checking on the way that
// their generations strictly increase in the order nexus received them.
func states(t *testing.T, n *sledagenttest.NexusReceiver, vmmID string) []sledagentv1.VmmState {
	t.Helper()
	var out []sledagentv1.VmmState
	var last uint64
	for _, u := range n.Updates(vmmID) {
		if g := u.GetRuntime().GetGeneration(); g <= last {
			t.Fatalf("VMM %s published generation %d after %d", vmmID, g, last)
		}
		last = u.GetRuntime().GetGeneration()
		out = append(out, u.GetRuntime().GetState())
	}
	return out
}

// publicationBarrier registers a fresh VMM and waits for its first update:
// publication is in order, so everything published before has arrived.
func publicationBarrier(t *testing.T, a *sledagenttest.Agent, n *sledagenttest.NexusReceiver) {
	t.Helper()
	id := a.Register()
	n.WaitUpdate(id, func(*nexusv1.VmmStateUpdateRequest) bool { return true })
}

func TestV1_RegisterIsIdempotentAndAVmmIdBelongsToOneInstance(t *testing.T) {
	a := sledagenttest.Start(t, sledagenttest.Explicit)
	req := &sledagentv1.EnsureRegisteredRequest{VmmId: uuid.NewString(), InstanceId: uuid.NewString(), Spec: spec(),
		InitialRuntime: &sledagentv1.VmmRuntime{Generation: 4}}
	first, err := a.Client.EnsureRegistered(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if rt := first.GetRuntime(); rt.GetState() != sStarting || rt.GetGeneration() != 5 {
		t.Fatalf("registered runtime %v, want starting at generation 5 (nexus's 4, bumped)", rt)
	}
	again, err := a.Client.EnsureRegistered(ctx, req)
	if err != nil || again.GetRuntime().GetGeneration() != 5 {
		t.Fatalf("second registration: %v, %v; want the same runtime", again, err)
	}
	other := &sledagentv1.EnsureRegisteredRequest{VmmId: req.VmmId, InstanceId: uuid.NewString(), Spec: spec()}
	_, err = a.Client.EnsureRegistered(ctx, other)
	requireReason(t, err, codes.AlreadyExists, "VMM_ALREADY_EXISTS")
	bigger := &sledagentv1.EnsureRegisteredRequest{VmmId: req.VmmId, InstanceId: req.InstanceId,
		Spec: &sledagentv1.VmmSpec{Ncpus: 8, MemoryBytes: 4 << 30, Hostname: "guest"}}
	_, err = a.Client.EnsureRegistered(ctx, bigger)
	requireReason(t, err, codes.AlreadyExists, "VMM_ALREADY_EXISTS")
	if n := len(a.Inventory().GetVmms()); n != 1 {
		t.Fatalf("inventory lists %d VMMs, want 1", n)
	}
}

func TestV1_BadRegistrationNamesTheFieldAndRegistersNothing(t *testing.T) {
	a := sledagenttest.Start(t, sledagenttest.Explicit)
	valid := func(mut func(*sledagentv1.EnsureRegisteredRequest)) *sledagentv1.EnsureRegisteredRequest {
		r := &sledagentv1.EnsureRegisteredRequest{VmmId: uuid.NewString(), InstanceId: uuid.NewString(), Spec: spec()}
		mut(r)
		return r
	}
	for name, tc := range map[string]struct {
		req   *sledagentv1.EnsureRegisteredRequest
		field string
	}{
		"malformed vmm id":     {valid(func(r *sledagentv1.EnsureRegisteredRequest) { r.VmmId = "vmm-1" }), "vmm_id"},
		"missing instance id":  {valid(func(r *sledagentv1.EnsureRegisteredRequest) { r.InstanceId = "" }), "instance_id"},
		"missing spec":         {valid(func(r *sledagentv1.EnsureRegisteredRequest) { r.Spec = nil }), "spec"},
		"zero cpus":            {valid(func(r *sledagentv1.EnsureRegisteredRequest) { r.Spec.Ncpus = 0 }), "spec.ncpus"},
		"negative cpus":        {valid(func(r *sledagentv1.EnsureRegisteredRequest) { r.Spec.Ncpus = -4 }), "spec.ncpus"},
		"zero memory":          {valid(func(r *sledagentv1.EnsureRegisteredRequest) { r.Spec.MemoryBytes = 0 }), "spec.memory_bytes"},
		"negative memory":      {valid(func(r *sledagentv1.EnsureRegisteredRequest) { r.Spec.MemoryBytes = -(1 << 30) }), "spec.memory_bytes"},
		"memory not whole GiB": {valid(func(r *sledagentv1.EnsureRegisteredRequest) { r.Spec.MemoryBytes = 3<<30 + 512 }), "spec.memory_bytes"},
		"bad hostname":         {valid(func(r *sledagentv1.EnsureRegisteredRequest) { r.Spec.Hostname = "-bad_host" }), "spec.hostname"},
		"initial generation 0": {valid(func(r *sledagentv1.EnsureRegisteredRequest) { r.InitialRuntime = &sledagentv1.VmmRuntime{} }), "initial_runtime.generation"},
		"migration without src": {valid(func(r *sledagentv1.EnsureRegisteredRequest) {
			r.MigrationTarget = &sledagentv1.MigrationTargetParams{MigrationId: uuid.NewString(), SourceVmmId: uuid.NewString()}
		}), "migration_target.source_sled_address"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := a.Client.EnsureRegistered(ctx, tc.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error = %v, want INVALID_ARGUMENT", err)
			}
			if v := apierror.FieldViolations(err); len(v) != 1 || v[0].Field != tc.field {
				t.Fatalf("violations %+v, want exactly one naming %s", v, tc.field)
			}
			if n := len(a.Inventory().GetVmms()); n != 0 {
				t.Fatalf("a refused registration left %d VMMs", n)
			}
		})
	}
}

func TestV2_UnknownVMMIsNoSuchVMMAndUnknownTargetIsInvalid(t *testing.T) {
	a := sledagenttest.Start(t, sledagenttest.Explicit)
	_, err := a.Client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: uuid.NewString(), Target: running})
	requireNoSuchVMM(t, err)
	_, err = a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: uuid.NewString()})
	requireNoSuchVMM(t, err)

	id := a.Register()
	for _, target := range []sledagentv1.VmmTargetState{0, 42} {
		_, err := a.Client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: id, Target: target})
		if v := apierror.FieldViolations(err); status.Code(err) != codes.InvalidArgument || len(v) != 1 || v[0].Field != "target" {
			t.Fatalf("target %d: %v, want INVALID_ARGUMENT naming target", target, err)
		}
	}
	_, err = a.Client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: "nope", Target: running})
	if v := apierror.FieldViolations(err); len(v) != 1 || v[0].Field != "vmm_id" {
		t.Fatalf("malformed id: %v", err)
	}
	if st := a.Inventory().GetVmms()[0].GetRuntime().GetState(); st != sStarting {
		t.Fatalf("refused requests moved the VMM to %s", st)
	}
}

func TestV6_ExplicitModeWalksTheStateMachineAndPublishesEveryStep(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	id := a.Register()
	rt := a.EnsureState(id, running)
	if rt.GetState() != sStarting {
		t.Fatalf("EnsureState(running) answered %v; in explicit mode nothing moves until stepped", rt)
	}
	// Taken by nexus before the first step, which could otherwise be
	// coalesced with it (V5), as every step below is waited for.
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool {
		return u.GetRuntime().GetGeneration() == rt.GetGeneration()
	})
	step := func(want sledagentv1.VmmState) {
		t.Helper()
		if a.Step(id, false) != 1 {
			t.Fatalf("no transition to %s was pending", want)
		}
		resp, err := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: id})
		if err != nil || resp.GetRuntime().GetState() != want {
			t.Fatalf("after a step: %v, %v; want %s", resp, err, want)
		}
		// A step published before nexus took the previous one could be
		// coalesced with it (V5); waiting sees every step through.
		gen := resp.GetRuntime().GetGeneration()
		n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetGeneration() == gen })
	}
	step(sRunning)
	a.EnsureState(id, reboot)
	a.EnsureState(id, reboot) // idempotent while the reboot is pending
	step(sRebooting)
	step(sRunning)
	if a.Step(id, false) != 0 {
		t.Fatal("a second reboot was queued by a repeated request")
	}
	a.EnsureState(id, stopped)
	step(sStopping)
	step(sStopped)
	step(sDestroyed)
	if len(a.Inventory().GetVmms()) != 0 {
		t.Fatal("a destroyed VMM is still in the inventory")
	}
	want := []sledagentv1.VmmState{sStarting, sRunning, sRebooting, sRunning, sStopping, sStopped, sDestroyed}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if got := states(t, n, id); !slices.Equal(got, want) {
			return fmt.Errorf("published %v, want %v", got, want)
		}
		return nil
	})
}

func TestV6_AutoModeCompletesTransitionsAfterTheDelay(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.WithNexus(n), func(c *config.Config) {
		c.VMMTransitionDelay = config.Duration(5 * time.Millisecond)
	})
	id := a.Register()
	a.EnsureState(id, running)
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sRunning })
	a.EnsureState(id, stopped)
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sDestroyed })
	// stopped and destroyed follow each other at once: nexus may hear only
	// the latter (V5 coalesces a VMM's updates).
	publishedWalk(t, n, id, sStarting, sRunning, sStopping, sStopped, sDestroyed)
}

func TestV6_UnreachableTargetsAreRefused(t *testing.T) {
	a := sledagenttest.Start(t, sledagenttest.Explicit)
	id := a.Register()
	_, err := a.Client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: id, Target: reboot})
	requireReason(t, err, codes.FailedPrecondition, "VMM_TARGET_UNREACHABLE")
	a.EnsureState(id, running)
	a.Step(id, false)
	a.EnsureState(id, stopped)
	a.Step(id, false) // stopping
	_, err = a.Client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: id, Target: running})
	requireReason(t, err, codes.FailedPrecondition, "VMM_TARGET_UNREACHABLE")
	if rt := a.EnsureState(id, stopped); rt.GetState() != sStopping {
		t.Fatalf("stopping a stopping VMM: %v", rt)
	}
}

// migrationPair starts a source and a target sled (explicit mode, one
// nexus), a running VMM on the source, and a migration-target VMM for it on
// the target.
func migrationPair(t *testing.T) (n *sledagenttest.NexusReceiver, src, dst *sledagenttest.Agent, source, target, migration string) {
	n = sledagenttest.StartNexus(t)
	src = sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	dst = sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	source = src.Register()
	src.EnsureState(source, running)
	src.Step(source, false)
	target, migration = uuid.NewString(), uuid.NewString()
	if _, err := dst.Client.EnsureRegistered(ctx, &sledagentv1.EnsureRegisteredRequest{
		VmmId: target, InstanceId: uuid.NewString(), Spec: spec(),
		MigrationTarget: &sledagentv1.MigrationTargetParams{MigrationId: migration, SourceVmmId: source,
			SourceSledAddress: src.Server.Addr()},
	}); err != nil {
		t.Fatal(err)
	}
	return n, src, dst, source, target, migration
}

func migrationState(t *testing.T, a *sledagenttest.Agent, vmmID string) (sledagentv1.VmmState, *sledagentv1.MigrationRuntime, *sledagentv1.MigrationRuntime) {
	t.Helper()
	resp, err := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: vmmID})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetRuntime().GetState(), resp.GetMigrationIn(), resp.GetMigrationOut()
}

func TestV6_MigrationMovesTheGuestFromSourceToTarget(t *testing.T) {
	const inProgress, completed = sledagentv1.MigrationState_MIGRATION_STATE_IN_PROGRESS, sledagentv1.MigrationState_MIGRATION_STATE_COMPLETED
	n, src, dst, source, target, migration := migrationPair(t)
	_, err := dst.Client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: target, Target: running})
	requireReason(t, err, codes.FailedPrecondition, "VMM_TARGET_UNREACHABLE")
	dst.EnsureState(target, migrationTarget)

	dst.Step(target, false) // the target begins pulling: the source is told
	if st, in, _ := migrationState(t, dst, target); st != sMigrating || in.GetState() != inProgress || in.GetMigrationId() != migration {
		t.Fatalf("target is %s with migration_in %v", st, in)
	}
	src.Step(source, false)
	if st, _, out := migrationState(t, src, source); st != sMigrating || out.GetState() != inProgress || out.GetMigrationId() != migration {
		t.Fatalf("source is %s with migration_out %v", st, out)
	}
	dst.Step(target, false) // the pull completes
	if st, in, _ := migrationState(t, dst, target); st != sRunning || in.GetState() != completed {
		t.Fatalf("target is %s with migration_in %v after completing", st, in)
	}
	src.Step(source, false)
	if st, _, out := migrationState(t, src, source); st != sDestroyed || out.GetState() != completed {
		t.Fatalf("source is %s with migration_out %v after the migration completed, want destroyed with it completed", st, out)
	}
	u := n.WaitUpdate(source, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sDestroyed })
	if u.GetMigrationOut().GetState() != completed {
		t.Fatalf("source's final update carries migration_out %v", u.GetMigrationOut())
	}
	n.WaitUpdate(target, func(u *nexusv1.VmmStateUpdateRequest) bool {
		return u.GetRuntime().GetState() == sRunning && u.GetMigrationIn().GetState() == completed
	})
	publishedWalk(t, n, source, sStarting, sRunning, sMigrating, sDestroyed)
	publishedWalk(t, n, target, sStarting, sMigrating, sRunning)
}

// A failed target reports it, then leaves the sled: a failed Propolis never
// runs again, and nexus must not find it registered once unlinked. The sled
// remembers how it ended: failed, never "unknown".
func TestV6_MigrationFromAVanishedSourceFailsTheTarget(t *testing.T) {
	n, src, dst, source, target, _ := migrationPair(t)
	if _, err := src.Client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: source}); err != nil {
		t.Fatal(err)
	}
	dst.EnsureState(target, migrationTarget)
	dst.Step(target, false)
	u := n.WaitUpdate(target, func(u *nexusv1.VmmStateUpdateRequest) bool {
		return u.GetRuntime().GetState() == sFailed &&
			u.GetMigrationIn().GetState() == sledagentv1.MigrationState_MIGRATION_STATE_FAILED
	})
	if len(dst.Inventory().GetVmms()) != 0 {
		t.Fatal("the failed target is still registered")
	}
	st, in, _ := migrationState(t, dst, target)
	if st != sFailed || in.GetState() != sledagentv1.MigrationState_MIGRATION_STATE_FAILED {
		t.Fatalf("GetVmmState of the failed target: %s with migration_in %v, want its end: failed", st, in)
	}
	resp, err := dst.Client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: target})
	if err != nil || !sameRuntime(resp.GetUpdatedRuntime(), u.GetRuntime()) {
		t.Fatalf("unregistering the failed target: %v, %v; want its final runtime %v", resp, err, u.GetRuntime())
	}
}

func TestV6_RudelyUnregisteredTargetLetsTheSourceResume(t *testing.T) {
	_, src, dst, source, target, _ := migrationPair(t)
	dst.EnsureState(target, migrationTarget)
	dst.Step(target, false)
	src.Step(source, false)
	if _, err := dst.Client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: target}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		src.Step(source, false)
		st, _, out := migrationState(t, src, source)
		if st != sRunning || out.GetState() != sledagentv1.MigrationState_MIGRATION_STATE_FAILED {
			return fmt.Errorf("source is %s with migration_out %v, want running again with the migration failed", st, out)
		}
		return nil
	})
}

func TestV3_RudeUnregisterDoesNotWaitForAHungStop(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	id := a.Register()
	a.EnsureState(id, running)
	a.Step(id, false)
	if _, err := a.Sim.HangVmmStop(ctx, &sledagentv1.HangVmmStopRequest{VmmId: id}); err != nil {
		t.Fatal(err)
	}
	a.EnsureState(id, stopped)
	a.Step(id, true) // reaches stopping, then hangs: an unresponsive Propolis
	if a.Step(id, true) != 0 {
		t.Fatal("a hung stop made progress")
	}
	before, _ := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: id})
	if before.GetRuntime().GetState() != sStopping {
		t.Fatalf("VMM is %v, want stuck stopping", before.GetRuntime())
	}

	resp, err := a.Client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: id})
	if err != nil {
		t.Fatal(err)
	}
	rt := resp.GetUpdatedRuntime()
	if rt.GetState() != sDestroyed || rt.GetGeneration() != before.GetRuntime().GetGeneration()+1 {
		t.Fatalf("unregister answered %v, want destroyed at generation %d", rt, before.GetRuntime().GetGeneration()+1)
	}
	after, err := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: id})
	if err != nil || !sameRuntime(after.GetRuntime(), rt) {
		t.Fatalf("GetVmmState after unregistering: %v, %v; want its end %v", after, err, rt)
	}
	if len(a.Inventory().GetVmms()) != 0 {
		t.Fatal("the VMM's zone is still listed")
	}
	// The stop would now complete if the VMM still existed; it does not.
	if _, err := a.Sim.ClearVmmFaults(ctx, &sledagentv1.ClearVmmFaultsRequest{}); err != nil {
		t.Fatal(err)
	}
	if a.Step("", true) != 0 {
		t.Fatal("a transition of an unregistered VMM completed")
	}
	publicationBarrier(t, a, n)
	for _, u := range n.Updates(id) {
		if u.GetRuntime().GetGeneration() >= rt.GetGeneration() {
			t.Fatalf("published %v after unregistering at generation %d", u.GetRuntime(), rt.GetGeneration())
		}
	}
}

// Unregistering again answers the same end (an unregistered VMM has ended,
// it is not unknown) and publishes nothing; only a VMM the sled never knew
// answers empty.
func TestV3_UnregisterIsIdempotentAndAnUnknownVMMAnswersEmpty(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	id := a.Register()
	var first *sledagentv1.VmmRuntime
	for i := 0; i < 3; i++ {
		resp, err := a.Client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: id})
		if err != nil {
			t.Fatal(err)
		}
		rt := resp.GetUpdatedRuntime()
		if i == 0 {
			if rt.GetState() != sDestroyed || rt.GetGeneration() != 3 {
				t.Fatalf("first unregister answered %v, want destroyed at generation 3 (starting was 2)", rt)
			}
			first = rt
		} else if !sameRuntime(rt, first) {
			t.Fatalf("unregister %d answered %v, want the same end %v", i, rt, first)
		}
	}
	resp, err := a.Client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: uuid.NewString()})
	if err != nil || resp.GetUpdatedRuntime() != nil {
		t.Fatalf("unknown VMM: %v, %v; want an empty answer", resp, err)
	}
	publicationBarrier(t, a, n)
	for _, u := range n.Updates(id) {
		if u.GetRuntime().GetGeneration() >= first.GetGeneration() {
			t.Fatalf("published %v after unregistering at generation %d", u.GetRuntime(), first.GetGeneration())
		}
	}
}

func TestV3_UpdatesNotYetDeliveredAreDroppedOnUnregister(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	n.Stop() // nexus unreachable: updates queue up and are retried
	id := a.Register()
	a.EnsureState(id, running)
	a.Step(id, false)
	if _, err := a.Client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: id}); err != nil {
		t.Fatal(err)
	}
	n.Start()
	publicationBarrier(t, a, n)
	if got := n.Updates(id); len(got) != 0 {
		t.Fatalf("nexus received %d updates of an unregistered VMM", len(got))
	}
}

// Retried updates are coalesced (V5): what nexus takes is the VMM's latest,
// in generation order, the states it missed meanwhile perhaps skipped.
func TestV5_UpdatesAreRetriedUntilNexusTakesThemInOrder(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	n.FailUpdates(codes.Unavailable, codes.Unavailable, codes.DeadlineExceeded, codes.Internal)
	id := a.Register()
	a.EnsureState(id, running)
	a.Step(id, false)
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sRunning })
	got := publishedWalk(t, n, id, sStarting, sRunning)
	if n.UpdateAttempts() != 4+len(got) {
		t.Fatalf("%d attempts, want 4 failures + %d deliveries", n.UpdateAttempts(), len(got))
	}

	// Nexus down altogether, then back on the same address.
	n.Stop()
	a.EnsureState(id, stopped)
	a.Step(id, true)
	n.Start()
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sDestroyed })
	publishedWalk(t, n, id, sStarting, sRunning, sStopping, sStopped, sDestroyed)
}

func TestV5_PermanentErrorsDropTheUpdateInsteadOfRetrying(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	n.FailUpdates(codes.InvalidArgument)
	id := a.Register() // its first update is refused for good
	a.EnsureState(id, running)
	a.Step(id, false)
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sRunning })
	if got := states(t, n, id); !slices.Equal(got, []sledagentv1.VmmState{sRunning}) || n.UpdateAttempts() != 2 {
		t.Fatalf("published %v in %d attempts; want the refused update dropped after one attempt", got, n.UpdateAttempts())
	}
}

func TestV7_EnsureStateFaultAnswersTheInjectedCode(t *testing.T) {
	a := sledagenttest.Start(t, sledagenttest.Explicit)
	id := a.Register()
	if _, err := a.Sim.FailEnsureState(ctx, &sledagentv1.FailEnsureStateRequest{VmmId: id, Count: 2,
		Code: uint32(codes.Unavailable), Message: "propolis is restarting"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		_, err := a.Client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: id, Target: running})
		if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "propolis is restarting" {
			t.Fatalf("call %d: %v, want the injected UNAVAILABLE", i, err)
		}
	}
	a.EnsureState(id, running)
	_, err := a.Sim.FailEnsureState(ctx, &sledagentv1.FailEnsureStateRequest{VmmId: id, Count: 1, Code: uint32(codes.NotFound)})
	if v := apierror.FieldViolations(err); len(v) != 1 || v[0].Field != "code" {
		t.Fatalf("NOT_FOUND must not be injectable as a plain error: %v", err)
	}
}

func TestV7_ForgottenVMMIsGoneWithoutNexusBeingTold(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	id := a.Register()
	a.EnsureState(id, running)
	a.Step(id, false)
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sRunning })
	if _, err := a.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: id}); err != nil {
		t.Fatal(err)
	}
	_, err := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: id})
	requireNoSuchVMM(t, err)
	resp, err := a.Client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: id})
	if err != nil || resp.GetUpdatedRuntime() != nil {
		t.Fatalf("unregistering a forgotten VMM: %v, %v; want empty", resp, err)
	}
	publicationBarrier(t, a, n)
	if last := n.Updates(id)[len(n.Updates(id))-1]; last.GetRuntime().GetState() != sRunning {
		t.Fatalf("nexus was told %v about a forgotten VMM", last.GetRuntime())
	}
}

func TestV7_BlackHoledAgentAcceptsCallsAndNeverAnswers(t *testing.T) {
	a := sledagenttest.Start(t, sledagenttest.Explicit)
	if _, err := a.Sim.SetBlackHole(ctx, &sledagentv1.SetBlackHoleRequest{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	callCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err := a.Client.GetInventory(callCtx, &sledagentv1.GetInventoryRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("call into the black hole: %v, want DEADLINE_EXCEEDED", err)
	}
	if _, err := a.Sim.ClearVmmFaults(ctx, &sledagentv1.ClearVmmFaultsRequest{}); err != nil {
		t.Fatalf("SledAgentSim must stay reachable: %v", err)
	}
	a.Inventory()
}

func TestV7_RPCLatencyDelaysSledAgentCalls(t *testing.T) {
	a := sledagenttest.Start(t, sledagenttest.Explicit)
	if _, err := a.Sim.SetRpcLatency(ctx, &sledagentv1.SetRpcLatencyRequest{Latency: durationpb.New(40 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a.Inventory()
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("call took %s with 40ms injected latency", d)
	}
}

func TestV7_RestartedAgentKnowsNoVMMs(t *testing.T) {
	a := sledagenttest.Start(t, sledagenttest.Explicit)
	id := a.Register()
	a.Restart()
	if len(a.Inventory().GetVmms()) != 0 {
		t.Fatal("a restarted agent lists VMMs")
	}
	_, err := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: id})
	requireNoSuchVMM(t, err)
}

func TestV8_AgentRegistersAndHeartbeatsOnceNexusIsReachable(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	n.Stop()
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	a.Inventory() // serves its API while nexus is down
	n.Start()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if len(n.Registrations()) == 0 || n.Heartbeats() < 3 {
			return fmt.Errorf("%d registrations, %d heartbeats", len(n.Registrations()), n.Heartbeats())
		}
		return nil
	})
	reg := n.Registrations()[0]
	if reg.GetSledId() != a.Config.SledID || reg.GetAddress() != a.Server.Addr() || reg.GetNcpus() != a.Config.NCPUs ||
		reg.GetMemoryBytes() != a.Config.MemoryGiB<<30 || !slices.Equal(reg.GetZpools(), a.Config.Zpools) {
		t.Fatalf("registration %v does not describe the sled", reg)
	}
	// A nexus that lost the sled answers heartbeats NOT_FOUND: the agent
	// registers again.
	n.ForgetSleds()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if len(n.Registrations()) < 2 {
			return errors.New("no re-registration yet")
		}
		return nil
	})
}

// SPEC 6 (no false reports): nexus answers a heartbeat once its database
// has it, and a database slow for seconds must not make a live sled go
// unheard. The agent sends every period whether or not the last one was
// answered, so nexus keeps hearing it (it counts a heartbeat as it
// arrives), with no more than a few unanswered at once.
func TestSPEC6_HeartbeatsGoOnWhileNexusIsSlowToAnswerThem(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n), func(c *config.Config) {
		c.NexusCallTimeout = config.Duration(time.Minute) // no unanswered heartbeat gives up during the test
	})
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n.Heartbeats() == 0 {
			return errors.New("no heartbeat yet")
		}
		return nil
	})
	release := n.HoldHeartbeats()
	defer release()
	held := n.Heartbeats()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := n.Heartbeats() - held; got < 3 {
			return fmt.Errorf("%d heartbeats arrived while none was answered, want 3 or more (period %s)", got, time.Duration(a.Config.HeartbeatPeriod))
		}
		return nil
	})
	release()
	answered := n.Heartbeats()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n.Heartbeats() < answered+3 {
			return errors.New("heartbeats did not go on once answered again")
		}
		return nil
	})
}

// TestV5_ConcurrentRequestsOnOneVMMStayConsistent fires many concurrent
// EnsureState and EnsureUnregistered calls at one VMM while transitions
// complete, then checks one consistent outcome: generations strictly
// increasing in what nexus received, every unregister answering one and the
// same end, the VMM either ended everywhere or registered everywhere, and
// never NO_SUCH_VMM: the sled never forgets a VMM that ended (F9).
func TestV5_ConcurrentRequestsOnOneVMMStayConsistent(t *testing.T) {
	for round := 0; round < 20; round++ {
		n := sledagenttest.StartNexus(t)
		a := sledagenttest.Start(t, sledagenttest.WithNexus(n), func(c *config.Config) { c.VMMTransitionDelay = 0 })
		id := a.Register()
		a.EnsureState(id, running)

		var mu sync.Mutex
		var unregistered []uint64
		var wg sync.WaitGroup
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(round), uint64(g)))
				for i := 0; i < 10; i++ {
					switch rng.IntN(4) {
					case 0:
						resp, err := a.Client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: id})
						if err != nil {
							t.Error(err)
							return
						}
						rt := resp.GetUpdatedRuntime()
						if rt.GetState() != sDestroyed && rt.GetState() != sFailed {
							t.Errorf("EnsureUnregistered answered %v, want the VMM's end", rt)
							return
						}
						mu.Lock()
						unregistered = append(unregistered, rt.GetGeneration())
						mu.Unlock()
					default:
						target := []sledagentv1.VmmTargetState{running, stopped, reboot}[rng.IntN(3)]
						_, err := a.Client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: id, Target: target})
						switch apierror.Reason(err) {
						case "", "VMM_TARGET_UNREACHABLE":
						default:
							t.Errorf("EnsureState(%s): %v", target, err)
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		for _, g := range unregistered {
			if g != unregistered[0] {
				t.Fatalf("round %d: unregister calls answered different ends at generations %v", round, unregistered)
			}
		}
		resp, err := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: id})
		if err != nil {
			t.Fatalf("round %d: GetVmmState: %v; the sled must not forget a VMM", round, err)
		}
		final := resp.GetRuntime()
		gone := final.GetState() == sDestroyed
		if listed := len(a.Inventory().GetVmms()) == 1; listed == gone {
			t.Fatalf("round %d: GetVmmState says %v but inventory lists it=%v", round, final, listed)
		}
		if len(unregistered) > 0 && (!gone || final.GetGeneration() != unregistered[0]) {
			t.Fatalf("round %d: unregister answered generation %d, the VMM's end is %v", round, unregistered[0], final)
		}
		publicationBarrier(t, a, n)
		states(t, n, id) // checks strictly increasing generations
		// The last update nexus received; nil when the VMM was unregistered
		// before anything was delivered.
		var last *sledagentv1.VmmRuntime
		if published := n.Updates(id); len(published) > 0 {
			last = published[len(published)-1].GetRuntime()
		}
		switch {
		case !gone:
		case last.GetState() == sDestroyed:
			// Destroyed by a stop (and published) before any unregister:
			// every unregister answered that end.
			if last.GetGeneration() != final.GetGeneration() {
				t.Fatalf("round %d: published end %v, the sled answers %v", round, last, final)
			}
		case len(unregistered) == 0:
			t.Fatalf("round %d: VMM ended %v without an unregister, last published %v", round, final, last)
		default:
			// Unregistered while registered: nothing published at or
			// after the unregister's generation.
			if last.GetGeneration() >= final.GetGeneration() {
				t.Fatalf("round %d: published generation %d at or after the unregister's %d", round, last.GetGeneration(), final.GetGeneration())
			}
		}
		a.Stop()
		n.Stop()
	}
}
