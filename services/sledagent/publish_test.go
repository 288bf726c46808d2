package sledagent_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// Publication (V5) keeps one undelivered update per VMM, the latest: these
// tests cover what that means for nexus; vmm_test.go covers the rest of V5.

// publishedWalk returns the states nexus took of a VMM, checking that they
// follow walk in order, perhaps skipping some (a VMM's updates coalesce
// while nexus has not taken the last one), and end where walk ends.
func publishedWalk(t *testing.T, n *sledagenttest.NexusReceiver, vmmID string, walk ...sledagentv1.VmmState) []sledagentv1.VmmState {
	t.Helper()
	got := states(t, n, vmmID)
	i := 0
	for _, s := range got {
		for i < len(walk) && walk[i] != s {
			i++
		}
		if i == len(walk) {
			t.Fatalf("VMM %s published %v, not a part of %v in order", vmmID, got, walk)
		}
		i++
	}
	if len(got) == 0 || got[len(got)-1] != walk[len(walk)-1] {
		t.Fatalf("VMM %s published %v, want it to end %s", vmmID, got, walk[len(walk)-1])
	}
	return got
}

// registerAs registers a VMM under a chosen id, so that nexus can be told
// about it before it publishes anything.
func registerAs(t *testing.T, a *sledagenttest.Agent, id string) {
	t.Helper()
	if _, err := a.Client.EnsureRegistered(ctx, &sledagentv1.EnsureRegisteredRequest{
		VmmId: id, InstanceId: uuid.NewString(), Spec: spec()}); err != nil {
		t.Fatal(err)
	}
}

func generations(reqs []*nexusv1.VmmStateUpdateRequest) []uint64 {
	out := make([]uint64, 0, len(reqs))
	for _, r := range reqs {
		out = append(out, r.GetRuntime().GetGeneration())
	}
	return out
}

// requireNeverBackwards checks that nexus was never sent an older
// generation of the VMM after a newer one, refused calls included.
func requireNeverBackwards(t *testing.T, n *sledagenttest.NexusReceiver, vmmID string) {
	t.Helper()
	gens := generations(n.AttemptsOf(vmmID))
	for i := 1; i < len(gens); i++ {
		if gens[i] < gens[i-1] {
			t.Fatalf("VMM %s: nexus was sent generation %d after %d (all: %v)", vmmID, gens[i], gens[i-1], gens)
		}
	}
}

// TestV5_AVMMWhoseUpdatesNexusKeepsRefusingDoesNotHoldBackOthers: nexus
// answers UNAVAILABLE to every update of one VMM; the sled keeps retrying
// it, and another VMM's updates still arrive meanwhile.
func TestV5_AVMMWhoseUpdatesNexusKeepsRefusingDoesNotHoldBackOthers(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	stuck := uuid.NewString()
	n.FailUpdatesOf(stuck, codes.Unavailable)
	registerAs(t, a, stuck) // published first
	other := a.Register()
	a.EnsureState(other, running)
	a.Step(other, false)
	n.WaitUpdate(other, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sRunning })
	publishedWalk(t, n, other, sStarting, sRunning)

	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := len(n.AttemptsOf(stuck)); got < 3 {
			return fmt.Errorf("%d attempts of the refused VMM, want it retried", got)
		}
		return nil
	})
	if got := n.Updates(stuck); len(got) != 0 {
		t.Fatalf("nexus took %d updates of the VMM it refuses", len(got))
	}
	n.FailUpdatesOf(stuck, codes.OK)
	n.WaitUpdate(stuck, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sStarting })
	requireNeverBackwards(t, n, stuck)
}

// TestV5_AnUpdateNexusRefusesForGoodIsDroppedWithAWarning: nexus answers
// NOT_FOUND (a VMM it does not know) to every update of one VMM; each is
// sent once, logged at warn with the VMM, its generation and the error,
// and dropped, while another VMM's updates arrive.
func TestV5_AnUpdateNexusRefusesForGoodIsDroppedWithAWarning(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	log := zap.New(zapcore.NewTee(sledagenttest.TestLogger(t).Core(), core))
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.StartLogged(t, log, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	refused := uuid.NewString()
	n.FailUpdatesOf(refused, codes.NotFound)
	registerAs(t, a, refused) // starting: generation 2
	other := a.Register()
	a.EnsureState(refused, running)
	a.Step(refused, false) // running: generation 3
	a.EnsureState(other, running)
	a.Step(other, false)
	n.WaitUpdate(other, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetState() == sRunning })

	dropped := func() map[uint64]string {
		out := map[uint64]string{}
		for _, e := range logs.FilterMessageSnippet("dropping it").All() {
			fields := e.ContextMap()
			if e.Level != zapcore.WarnLevel || fields["vmm_id"] != refused {
				continue
			}
			gen, _ := fields["generation"].(uint64)
			msg, _ := fields["error"].(string)
			out[gen] = msg
		}
		return out
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if _, ok := dropped()[3]; !ok {
			return fmt.Errorf("no warning that generation 3 of VMM %s was dropped; warnings: %v", refused, dropped())
		}
		return nil
	})
	publicationBarrier(t, a, n)
	attempts := generations(n.AttemptsOf(refused))
	for i := 1; i < len(attempts); i++ {
		if attempts[i] <= attempts[i-1] {
			t.Fatalf("refused generations were sent %v: a refused update was sent again", attempts)
		}
	}
	for _, gen := range attempts {
		if msg, ok := dropped()[gen]; !ok || !strings.Contains(msg, "NotFound") {
			t.Fatalf("generation %d was refused; its warning: %q (found %v)", gen, msg, ok)
		}
	}
	if got := n.Updates(refused); len(got) != 0 {
		t.Fatalf("nexus took %d updates of the VMM it refuses", len(got))
	}
}

// TestV5_ManyTransitionsWhileNexusDoesNotListenLeaveOnlyTheLatest: while
// nexus refuses a VMM's updates, or is down, its many transitions leave one
// pending update, so that nexus then hears only the latest, and never an
// older generation after a newer one.
func TestV5_ManyTransitionsWhileNexusDoesNotListenLeaveOnlyTheLatest(t *testing.T) {
	n := sledagenttest.StartNexus(t)
	a := sledagenttest.Start(t, sledagenttest.Explicit, sledagenttest.WithNexus(n))
	id := a.Register()
	n.WaitUpdate(id, func(*nexusv1.VmmStateUpdateRequest) bool { return true })
	walk := func() uint64 {
		t.Helper()
		for i := 0; i < 10; i++ { // each reboot is two transitions
			a.EnsureState(id, reboot)
			a.Step(id, false)
			a.Step(id, false)
		}
		resp, err := a.Client.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: id})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetRuntime().GetGeneration()
	}

	// Nexus refuses the VMM: its retries soon carry only the latest.
	n.FailUpdatesOf(id, codes.Unavailable)
	a.EnsureState(id, running)
	a.Step(id, false)
	latest := walk()
	testutil.WaitFor(t, 10*time.Second, func() error {
		attempts := n.AttemptsOf(id)
		if last := attempts[len(attempts)-1].GetRuntime().GetGeneration(); last != latest {
			return fmt.Errorf("the last attempt carried generation %d, want the latest, %d", last, latest)
		}
		return nil
	})
	n.FailUpdatesOf(id, codes.OK)
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetGeneration() == latest })
	if got := generations(n.Updates(id)); len(got) != 2 || got[1] != latest {
		t.Fatalf("nexus took generations %v, want the first and then only the latest, %d", got, latest)
	}
	requireNeverBackwards(t, n, id)

	// Nexus down: at most the attempt in flight when it came back, then
	// the latest.
	before := len(n.Updates(id))
	n.Stop()
	latest = walk()
	n.Start()
	n.WaitUpdate(id, func(u *nexusv1.VmmStateUpdateRequest) bool { return u.GetRuntime().GetGeneration() == latest })
	states(t, n, id) // strictly increasing generations
	if got := generations(n.Updates(id)[before:]); len(got) > 2 {
		t.Fatalf("after %d transitions while nexus was down it took generations %v, want at most 2 ending %d",
			20, got, latest)
	}
}
