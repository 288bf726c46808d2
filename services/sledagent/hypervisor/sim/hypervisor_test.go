package sim

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/vmm"
)

// slowPeer is a source sled whose answer to "begin" the test controls.
type slowPeer struct {
	beginEntered, beginRelease chan struct{}
	mu                         sync.Mutex
	ends                       []bool
}

func (p *slowPeer) BeginMigrationOut(string, uuid.UUID, uuid.UUID, uuid.UUID) error {
	close(p.beginEntered)
	<-p.beginRelease
	return nil
}

func (p *slowPeer) EndMigrationOut(_ string, _ uuid.UUID, _ uuid.UUID, succeeded bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ends = append(p.ends, succeeded)
	return nil
}

func migrationTarget(t *testing.T, h *Hypervisor) uuid.UUID {
	t.Helper()
	id := uuid.New()
	if _, err := h.Launch(id, vmm.Spec{}, &vmm.MigrationTarget{MigrationID: uuid.New(), SourceVMM: uuid.New(),
		SourceSledAddress: "source"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Request(id, vmm.TargetMigrationTarget); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestV6_ASourceHearsThePullIsOffWhenItsTargetDiesDuringTheBegin: without
// that, the source would stay migrating, unable even to stop.
func TestV6_ASourceHearsThePullIsOffWhenItsTargetDiesDuringTheBegin(t *testing.T) {
	peer := &slowPeer{beginEntered: make(chan struct{}), beginRelease: make(chan struct{})}
	h := New(ModeExplicit, 0, peer)
	h.SetObserver(func(uuid.UUID, vmm.Observation) {})
	id := migrationTarget(t, h)
	stepped := make(chan int)
	go func() { stepped <- h.Step(id, false) }()
	<-peer.beginEntered
	h.Terminate(id)
	close(peer.beginRelease)
	if n := <-stepped; n != 0 {
		t.Fatalf("a terminated target completed %d transitions", n)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		peer.mu.Lock()
		defer peer.mu.Unlock()
		if len(peer.ends) != 1 || peer.ends[0] {
			return errors.New("the source was not told the pull failed")
		}
		return nil
	})
	h.Close()
}

func TestCloseStopsEveryTransitionAndRefusesNewVMMs(t *testing.T) {
	observed := 0
	h := New(ModeAuto, time.Hour, nil)
	h.SetObserver(func(uuid.UUID, vmm.Observation) { observed++ })
	id := uuid.New()
	if _, err := h.Launch(id, vmm.Spec{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Request(id, vmm.TargetRunning); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if n := h.Step(id, true); n != 0 || observed != 0 {
		t.Fatalf("after Close: %d transitions, %d observations", n, observed)
	}
	if _, err := h.Launch(uuid.New(), vmm.Spec{}, nil); err == nil {
		t.Fatal("a closed hypervisor launched a VMM")
	}
}
