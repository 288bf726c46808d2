package nexusclient_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/nexusclient"
	"github.com/rackplane/rackplane/services/sledagent/vmm"
)

// fakeNexus answers VmmStateUpdate with whatever answer returns, and keeps
// every call.
type fakeNexus struct {
	nexusv1.NexusInternalClient // only VmmStateUpdate is called

	mu       sync.Mutex
	answer   func(context.Context, *nexusv1.VmmStateUpdateRequest) error
	calls    []*nexusv1.VmmStateUpdateRequest
	accepted []*nexusv1.VmmStateUpdateRequest
}

func (f *fakeNexus) VmmStateUpdate(ctx context.Context, req *nexusv1.VmmStateUpdateRequest, _ ...grpc.CallOption) (*nexusv1.VmmStateUpdateResponse, error) {
	f.mu.Lock()
	f.calls = append(f.calls, req)
	answer := f.answer
	f.mu.Unlock()
	if err := answer(ctx, req); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accepted = append(f.accepted, req)
	return &nexusv1.VmmStateUpdateResponse{}, nil
}

func (f *fakeNexus) setAnswer(answer func(context.Context, *nexusv1.VmmStateUpdateRequest) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = answer
}

// of returns the calls (or accepted ones) about one VMM.
func (f *fakeNexus) of(id uuid.UUID, accepted bool) []*nexusv1.VmmStateUpdateRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	from := f.calls
	if accepted {
		from = f.accepted
	}
	var out []*nexusv1.VmmStateUpdateRequest
	for _, r := range from {
		if r.GetVmmId() == id.String() {
			out = append(out, r)
		}
	}
	return out
}

func startPublisher(t *testing.T, f *fakeNexus, log *zap.Logger) *nexusclient.Publisher {
	p := nexusclient.NewPublisher(f, nexusclient.PublisherConfig{
		SledID:         uuid.New(),
		Retry:          backoff.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond, Jitter: 0.5},
		AttemptTimeout: 5 * time.Second,
	}, log)
	t.Cleanup(p.Close)
	return p
}

func update(id uuid.UUID, gen uint64, state vmm.State) vmm.Update {
	return vmm.Update{VMM: id, Runtime: vmm.Runtime{State: state, Generation: gen, TimeUpdated: time.Now()}}
}

func side(id uuid.UUID, gen uint64, state vmm.MigrationState) *vmm.Migration {
	return &vmm.Migration{ID: id, State: state, Generation: gen, TimeUpdated: time.Now()}
}

func refuse(context.Context, *nexusv1.VmmStateUpdateRequest) error {
	return status.Error(codes.Unavailable, "nexus is not there")
}

func accept(context.Context, *nexusv1.VmmStateUpdateRequest) error { return nil }

// gated makes the first call block until release is closed, then fail
// transiently; every later call is accepted. entered is closed once the
// first call arrived.
func gated() (answer func(context.Context, *nexusv1.VmmStateUpdateRequest) error, entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	answer = func(ctx context.Context, _ *nexusv1.VmmStateUpdateRequest) error {
		first := false
		once.Do(func() { first = true })
		if !first {
			return nil
		}
		close(entered)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return status.Error(codes.Unavailable, "nexus is not there")
	}
	return answer, entered, release
}

// TestV5_PendingStaysAtOneUpdatePerVMMWhileNexusRefuses: however many
// changes nexus misses, the publisher holds one update per VMM, and nexus
// then takes only the latest of each.
func TestV5_PendingStaysAtOneUpdatePerVMMWhileNexusRefuses(t *testing.T) {
	f := &fakeNexus{answer: refuse}
	p := startPublisher(t, f, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	a, b := uuid.New(), uuid.New()
	const changes = 1000
	for gen := uint64(1); gen <= changes; gen++ {
		p.Publish(update(a, gen, vmm.StateRunning))
		p.Publish(update(b, gen, vmm.StateRunning))
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := p.Pending(); n != 2 {
			return fmt.Errorf("%d updates pending after %d changes of 2 VMMs, want 1 per VMM", n, 2*changes)
		}
		return nil
	})
	f.setAnswer(accept)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := p.Pending(); n != 0 {
			return fmt.Errorf("%d updates pending", n)
		}
		return nil
	})
	for _, id := range []uuid.UUID{a, b} {
		var gens []uint64
		for _, r := range f.of(id, true) {
			gens = append(gens, r.GetRuntime().GetGeneration())
		}
		if len(gens) != 1 || gens[0] != changes {
			t.Fatalf("nexus took generations %v of VMM %s, want only the latest, %d", gens, id, changes)
		}
	}
}

// TestV5_ANewerUpdateKeepsTheNewestOfEachPart: a VMM's waiting updates
// coalesce into one carrying the newest runtime and the newest report of
// each migration side, including a side the newest update does not carry.
func TestV5_ANewerUpdateKeepsTheNewestOfEachPart(t *testing.T) {
	answer, entered, release := gated()
	f := &fakeNexus{answer: answer}
	p := startPublisher(t, f, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	id, out, in := uuid.New(), uuid.New(), uuid.New()

	p.Publish(update(id, 2, vmm.StateRunning))
	<-entered // in flight, and nexus will not take it
	u3 := update(id, 3, vmm.StateMigrating)
	u3.MigrationOut = side(out, 1, vmm.MigrationInProgress)
	u3.MigrationIn = side(in, 3, vmm.MigrationInProgress)
	p.Publish(u3)
	u4 := update(id, 4, vmm.StateMigrating)
	u4.MigrationOut = side(out, 2, vmm.MigrationCompleted)
	u4.MigrationIn = side(in, 2, vmm.MigrationPending) // older than u3's
	p.Publish(u4)
	p.Publish(update(id, 5, vmm.StateDestroyed)) // carries no migration side
	if n := p.Pending(); n != 2 {
		t.Fatalf("%d updates pending, want the one in flight and one coalesced", n)
	}
	close(release)

	testutil.WaitFor(t, 10*time.Second, func() error {
		if len(f.of(id, true)) == 0 {
			return fmt.Errorf("nothing delivered yet")
		}
		return nil
	})
	calls := f.of(id, false)
	if len(calls) != 2 {
		t.Fatalf("nexus got %d calls, want the refused generation 2 and one coalesced update: %v", len(calls), calls)
	}
	got := calls[1]
	if rt := got.GetRuntime(); rt.GetGeneration() != 5 || rt.GetState() != sledagentv1.VmmState_VMM_STATE_DESTROYED {
		t.Fatalf("coalesced runtime %v, want destroyed at generation 5", rt)
	}
	if m := got.GetMigrationOut(); m.GetMigrationId() != out.String() || m.GetGeneration() != 2 ||
		m.GetState() != sledagentv1.MigrationState_MIGRATION_STATE_COMPLETED {
		t.Fatalf("coalesced migration_out %v, want migration %s completed at generation 2", m, out)
	}
	if m := got.GetMigrationIn(); m.GetMigrationId() != in.String() || m.GetGeneration() != 3 {
		t.Fatalf("coalesced migration_in %v, want migration %s at generation 3", m, in)
	}
}

// TestV5_AVMMsNextMigrationSupersedesTheUndeliveredReportOfItsLast: when a
// side belongs to another migration, the newer migration's report wins,
// and the superseded one is logged.
func TestV5_AVMMsNextMigrationSupersedesTheUndeliveredReportOfItsLast(t *testing.T) {
	answer, entered, release := gated()
	f := &fakeNexus{answer: answer}
	core, logs := observer.New(zap.WarnLevel)
	p := startPublisher(t, f, zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core(), core)))
	id, first, next := uuid.New(), uuid.New(), uuid.New()

	p.Publish(update(id, 2, vmm.StateRunning))
	<-entered
	u3 := update(id, 3, vmm.StateRunning)
	u3.MigrationOut = side(first, 3, vmm.MigrationFailed)
	p.Publish(u3)
	u4 := update(id, 4, vmm.StateMigrating)
	u4.MigrationOut = side(next, 1, vmm.MigrationInProgress)
	p.Publish(u4)
	close(release)

	testutil.WaitFor(t, 10*time.Second, func() error {
		if len(f.of(id, true)) == 0 {
			return fmt.Errorf("nothing delivered yet")
		}
		return nil
	})
	calls := f.of(id, false)
	if len(calls) != 2 || calls[1].GetMigrationOut().GetMigrationId() != next.String() || calls[1].GetRuntime().GetGeneration() != 4 {
		t.Fatalf("nexus got %v, want the refused generation 2, then generation 4 with migration %s", calls, next)
	}
	superseded := logs.FilterMessageSnippet("superseded").FilterField(zap.Stringer("migration_id", first)).All()
	if len(superseded) != 1 {
		t.Fatalf("%d warnings naming the superseded migration %s, want 1: %v", len(superseded), first, logs.All())
	}
}
