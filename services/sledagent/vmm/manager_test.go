package vmm_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"
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
	m.Observe(id, vmm.Observation{State: vmm.StateRunning})
	if pub.count() != before {
		t.Fatal("an observation after unregistering was published")
	}
	if _, err := m.Get(id); err == nil {
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
	if _, err := m.Get(id); !errors.Is(err, vmm.ErrNoSuchVMM) {
		t.Fatalf("after the observation: %v, want ErrNoSuchVMM", err)
	}
}

// TestV5_AnObservationOfAnEarlierIncarnationIsDropped: the same VMM id
// registered again must not inherit news about the VMM it replaced.
func TestV5_AnObservationOfAnEarlierIncarnationIsDropped(t *testing.T) {
	m, _, pub := newManager(t)
	id := uuid.New()
	reg := vmm.Registration{VMM: id, Instance: uuid.New(),
		Spec: vmm.Spec{NCPUs: 1, MemoryBytes: 1 << 30, Hostname: "g"}, InitialGeneration: 1}
	if _, err := m.EnsureRegistered(reg); err != nil {
		t.Fatal(err)
	}
	m.EnsureUnregistered(id)
	if _, err := m.EnsureRegistered(reg); err != nil {
		t.Fatal(err)
	}
	before := pub.count()
	m.Observe(id, vmm.Observation{Incarnation: 1, State: vmm.StateRunning})
	if v, _ := m.Get(id); v.Runtime.State != vmm.StateStarting || pub.count() != before {
		t.Fatalf("a stale incarnation's observation was applied: %+v", v.Runtime)
	}
}
