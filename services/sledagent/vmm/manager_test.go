package vmm_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	hypervisorsim "github.com/rackplane/rackplane/services/sledagent/hypervisor/sim"
	"github.com/rackplane/rackplane/services/sledagent/vmm"
)

// recorder is a Publisher that keeps what it is given.
type recorder struct {
	mu      sync.Mutex
	updates []vmm.Update
}

func (r *recorder) Publish(u vmm.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates = append(r.updates, u)
}

func (r *recorder) Drop(uuid.UUID) {}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.updates)
}

func newManager(t *testing.T) (*vmm.Manager, *hypervisorsim.Hypervisor, *recorder) {
	h := hypervisorsim.New(hypervisorsim.ModeExplicit, 0, nil)
	pub := &recorder{}
	m := vmm.NewManager(h, pub, zaptest.NewLogger(t))
	h.SetObserver(m.Observe)
	return m, h, pub
}

func register(t *testing.T, m *vmm.Manager) uuid.UUID {
	t.Helper()
	id := uuid.New()
	if _, err := m.EnsureRegistered(vmm.Registration{VMM: id, Instance: uuid.New(),
		Spec: vmm.Spec{NCPUs: 1, MemoryBytes: 1 << 30, Hostname: "g"}, InitialGeneration: 1}); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestV3_ALateObservationOfAnUnregisteredVMMIsNotPublished stages the race
// where the hypervisor computed a transition just before the VMM was
// unregistered and reports it just after.
func TestV3_ALateObservationOfAnUnregisteredVMMIsNotPublished(t *testing.T) {
	m, _, pub := newManager(t)
	id := register(t, m)
	final := m.EnsureUnregistered(id)
	if final == nil || final.State != vmm.StateDestroyed {
		t.Fatalf("unregister returned %+v", final)
	}
	before := pub.count()
	m.Observe(id, vmm.Observation{Incarnation: 1, State: vmm.StateRunning})
	if pub.count() != before {
		t.Fatal("an observation after unregistering was published")
	}
	if v, err := m.Get(id); err != nil || v.Runtime != *final {
		t.Fatalf("after a late observation: %+v, %v; want the VMM's end %+v", v.Runtime, err, *final)
	}
	if len(m.List()) != 0 {
		t.Fatal("a late observation brought the VMM back")
	}
}

func TestV5_EveryObservedChangeBumpsTheGenerationOnce(t *testing.T) {
	m, h, pub := newManager(t)
	id := register(t, m)
	if _, err := m.EnsureState(id, vmm.TargetRunning); err != nil {
		t.Fatal(err)
	}
	h.Step(id, true)
	m.Observe(id, vmm.Observation{Incarnation: 1, State: vmm.StateRunning}) // a repeat is no change
	var gens []uint64
	for _, u := range pub.updates {
		gens = append(gens, u.Runtime.Generation)
	}
	if len(gens) != 2 || gens[0] != 2 || gens[1] != 3 {
		t.Fatalf("published generations %v, want [2 3]", gens)
	}
}

// TestV2_AStopRacingTheFinalObservationIsNotAnsweredNoSuchVMM stages the
// window between the hypervisor destroying a VMM and the manager observing
// it: a stop retried then must not read "gone", which nexus would turn into
// a failed instance although the stop simply succeeded.
func TestV2_AStopRacingTheFinalObservationIsNotAnsweredNoSuchVMM(t *testing.T) {
	h := hypervisorsim.New(hypervisorsim.ModeExplicit, 0, nil)
	m := vmm.NewManager(h, &recorder{}, zaptest.NewLogger(t))
	entered, release := make(chan struct{}), make(chan struct{})
	h.SetObserver(func(id uuid.UUID, obs vmm.Observation) {
		if obs.State == vmm.StateDestroyed {
			close(entered)
			<-release
		}
		m.Observe(id, obs)
	})
	id := register(t, m)
	if _, err := m.EnsureState(id, vmm.TargetRunning); err != nil {
		t.Fatal(err)
	}
	h.Step(id, false)
	if _, err := m.EnsureState(id, vmm.TargetStopped); err != nil {
		t.Fatal(err)
	}
	h.Step(id, false) // stopping
	h.Step(id, false) // stopped
	done := make(chan struct{})
	go func() { h.Step(id, false); close(done) }() // destroyed, observation held
	<-entered
	rt, err := m.EnsureState(id, vmm.TargetStopped)
	if err != nil || rt.State != vmm.StateStopped {
		t.Fatalf("stop during the final observation: %+v, %v; want the VMM's runtime", rt, err)
	}
	if _, err := m.EnsureState(id, vmm.TargetRunning); !errors.Is(err, vmm.ErrUnreachableTarget) {
		t.Fatalf("run during the final observation: %v, want ErrUnreachableTarget", err)
	}
	close(release)
	<-done
	// And after it, the VMM has ended: still not "gone".
	v, err := m.Get(id)
	if err != nil || v.Runtime.State != vmm.StateDestroyed {
		t.Fatalf("after the observation: %+v, %v; want the VMM's end", v.Runtime, err)
	}
	if rt, err := m.EnsureState(id, vmm.TargetStopped); err != nil || rt != v.Runtime {
		t.Fatalf("stop after the observation: %+v, %v; want the VMM's end %+v", rt, err, v.Runtime)
	}
	if _, err := m.EnsureState(id, vmm.TargetRunning); !errors.Is(err, vmm.ErrUnreachableTarget) {
		t.Fatalf("run after the observation: %v, want ErrUnreachableTarget", err)
	}
}

// TestV5_AnObservationOfAnEarlierIncarnationIsDropped: the same VMM id
// registered again (possible only once the sled forgot it, as after a
// restart) must not inherit news about the VMM it replaced.
func TestV5_AnObservationOfAnEarlierIncarnationIsDropped(t *testing.T) {
	m, _, pub := newManager(t)
	id := uuid.New()
	reg := vmm.Registration{VMM: id, Instance: uuid.New(),
		Spec: vmm.Spec{NCPUs: 1, MemoryBytes: 1 << 30, Hostname: "g"}, InitialGeneration: 1}
	if _, err := m.EnsureRegistered(reg); err != nil {
		t.Fatal(err)
	}
	m.EnsureUnregistered(id)
	if !m.Forget(id) {
		t.Fatal("Forget did not know the ended VMM")
	}
	if _, err := m.EnsureRegistered(reg); err != nil {
		t.Fatal(err)
	}
	before := pub.count()
	m.Observe(id, vmm.Observation{Incarnation: 1, State: vmm.StateRunning})
	if v, _ := m.Get(id); v.Runtime.State != vmm.StateStarting || pub.count() != before {
		t.Fatalf("a stale incarnation's observation was applied: %+v", v.Runtime)
	}
}

// TestV3_AFailedVMMIsRememberedAsFailed: a VMM whose Propolis failed leaves
// the table, and every later question about it answers that end.
func TestV3_AFailedVMMIsRememberedAsFailed(t *testing.T) {
	m, _, pub := newManager(t)
	id := register(t, m)
	m.Observe(id, vmm.Observation{Incarnation: 1, State: vmm.StateFailed})
	v, err := m.Get(id)
	if err != nil || v.Runtime.State != vmm.StateFailed || v.Runtime.Generation != 3 {
		t.Fatalf("Get of a failed VMM: %+v, %v; want failed at generation 3", v.Runtime, err)
	}
	before := pub.count()
	if rt := m.EnsureUnregistered(id); rt == nil || *rt != v.Runtime {
		t.Fatalf("unregistering a failed VMM answered %+v, want its end %+v", rt, v.Runtime)
	}
	if rt, err := m.EnsureState(id, vmm.TargetStopped); err != nil || rt != v.Runtime {
		t.Fatalf("stopping a failed VMM: %+v, %v; want its end", rt, err)
	}
	for _, target := range []vmm.Target{vmm.TargetRunning, vmm.TargetReboot, vmm.TargetMigrationTarget} {
		if _, err := m.EnsureState(id, target); !errors.Is(err, vmm.ErrUnreachableTarget) || errors.Is(err, vmm.ErrNoSuchVMM) {
			t.Fatalf("EnsureState(%s) of a failed VMM: %v, want ErrUnreachableTarget", target, err)
		}
	}
	if pub.count() != before || len(m.List()) != 0 {
		t.Fatalf("questions about a failed VMM published %d updates or listed it", pub.count()-before)
	}
}

// TestV3_TheManagerRemembersTheMostRecentEndedVMMs: the memory of ended
// VMMs is bounded; the one that ended longest ago is forgotten first, and
// a forgotten one is unknown again.
func TestV3_TheManagerRemembersTheMostRecentEndedVMMs(t *testing.T) {
	h := hypervisorsim.New(hypervisorsim.ModeExplicit, 0, nil)
	m := vmm.NewManager(h, &recorder{}, zap.NewNop())
	h.SetObserver(m.Observe)
	ids := make([]uuid.UUID, vmm.EndedLimit+2)
	for i := range ids {
		ids[i] = register(t, m)
		if m.EnsureUnregistered(ids[i]) == nil {
			t.Fatalf("unregistering VMM %d answered nil", i)
		}
	}
	for i, id := range ids {
		rt := m.EnsureUnregistered(id)
		if i < 2 {
			if rt != nil {
				t.Fatalf("VMM %d, ended %d VMMs ago, is still remembered: %+v", i, len(ids)-i, rt)
			}
			if _, err := m.Get(id); !errors.Is(err, vmm.ErrNoSuchVMM) {
				t.Fatalf("Get of forgotten VMM %d: %v, want ErrNoSuchVMM", i, err)
			}
			continue
		}
		if rt == nil || rt.State != vmm.StateDestroyed {
			t.Fatalf("VMM %d, one of the last %d ended, answered %+v", i, vmm.EndedLimit, rt)
		}
	}
	// Forgetting one frees its place: the next end evicts no one else.
	if !m.Forget(ids[2]) {
		t.Fatal("Forget did not know an ended VMM")
	}
	last := register(t, m)
	m.EnsureUnregistered(last)
	for _, id := range append(ids[3:], last) {
		if m.EnsureUnregistered(id) == nil {
			t.Fatalf("VMM %s was forgotten although a place was free", id)
		}
	}
	if m.EnsureUnregistered(ids[2]) != nil {
		t.Fatal("a forgotten VMM is remembered again")
	}
}
