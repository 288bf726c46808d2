package nexus_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/oxidecomputer/oxide.go/oxide"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	"github.com/rackplane/rackplane/services/racktest"
)

// N7, F2, SPEC 7: a create with start that a force-terminate (or a stop)
// answers for between its link and its run stands, and the instance ends
// stopped: it never vanishes without a delete because its create then
// failed to run it.
func TestN7_ACreateStoppedWhileItStartsStandsAndEndsStopped(t *testing.T) {
	for _, how := range []string{"force-terminate", "stop"} {
		t.Run(how, func(t *testing.T) {
			h := createHeldAt(t, "ensure_running")
			r, n, token, c, block, created := h.rack, h.rack.Server(), h.token, h.api, h.block, h.created
			switch how {
			case "force-terminate":
				mustForceTerminate(t, n, token, "vm", "p", "stopped")
			case "stop":
				inst, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"})
				if err != nil {
					t.Fatalf("stop during create: %v", err)
				}
				t.Logf("stop answered %s", inst.RunState)
			}
			close(block.release)
			err := <-created
			_, viewErr := c.InstanceView(ctx, oxide.InstanceViewParams{Project: "p", Instance: "vm"})
			if errors.Is(viewErr, oxide.ErrObjectNotFound) {
				t.Fatalf("after a %s answered for it, the instance vanished without any delete (create: %v)", how, err)
			}
			if err != nil || viewErr != nil {
				t.Fatalf("the create a %s interrupted: %v; viewing it: %v", how, err, viewErr)
			}
			if _, err := r.Agents()[0].Sim.StepVmms(ctx, &sledagentv1.StepVmmsRequest{Drain: true}); err != nil {
				t.Fatal(err)
			}
			waitRunState(t, c, "p", "vm", oxide.InstanceStateStopped)
		})
	}
}

// F1, F2, F9: a force-terminate of an instance still `creating` (its create
// saga has not linked a VMM yet) does not answer an unsettled 200: it
// records the wish and answers busy, and the create then leaves the
// instance stopped with no VMM on any sled.
func TestF1_AForceTerminateOfACreatingInstanceAnswersBusyAndTheCreateEndsStopped(t *testing.T) {
	h := createHeldAt(t, "link_vmm")
	n, agents, token, c, block, created := h.rack.Server(), h.rack.Agents(), h.token, h.api, h.block, h.created
	code, inst, eb := forceTerminate(t, n, token, "vm", "p")
	if code != http.StatusConflict && code != http.StatusServiceUnavailable {
		t.Errorf("force-terminate of a creating instance: %d %+v %+v, want 409 or 503 (creating is not settled)", code, inst, eb)
	}
	close(block.release)
	if err := <-created; err != nil {
		t.Fatalf("the create whose instance was force-terminated meanwhile: %v", err)
	}
	if k := len(agents[0].Inventory().GetVmms()); k != 0 {
		t.Errorf("%d VMMs registered on the sled after a force-terminate of the creating instance", k)
	}
	waitRunState(t, c, "p", "vm", oxide.InstanceStateStopped)
	mustForceTerminate(t, n, token, "vm", "p", "stopped")
}

// N13, F1, SPEC 7: a create with start that cannot place its VMM after a
// stop or force-terminate recorded its wish leaves the instance stopped.
// The create unwinds, but the instance is no longer only the create's to
// remove, and it must not stay `creating` for good either (found by an
// adversarial review of the saga undos).
func TestN13_ACreateThatCannotStartAfterAStopWasRecordedLeavesItsInstanceStopped(t *testing.T) {
	noRoom := nexus.WithSagaOptions(saga.WithInjectedErrors(func(template, node string) error {
		if template == sagas.InstanceCreate && node == "alloc_vmm" {
			return fmt.Errorf("%w: no sled has room (injected)", model.ErrNoCapacity)
		}
		return nil
	}))
	for _, how := range []string{"force-terminate", "stop"} {
		t.Run(how, func(t *testing.T) {
			h := createHeldAt(t, "alloc_vmm", noRoom)
			switch how {
			case "force-terminate":
				if code, _, eb := forceTerminate(t, h.rack.Server(), h.token, "vm", "p"); code != http.StatusConflict &&
					code != http.StatusServiceUnavailable {
					t.Fatalf("force-terminate of a creating instance: %d %+v", code, eb)
				}
			case "stop":
				if _, err := h.api.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"}); err != nil {
					t.Fatalf("stop during create: %v", err)
				}
			}
			close(h.block.release)
			if err := <-h.created; err == nil {
				t.Fatalf("the create whose VMM found no room answered success")
			}
			waitRunState(t, h.api, "p", "vm", oxide.InstanceStateStopped)
			if k := len(h.rack.Agents()[0].Inventory().GetVmms()); k != 0 {
				t.Errorf("%d VMMs registered on the sled", k)
			}
		})
	}
}

// heldCreate is a create with start of instance "vm" in project "p", on a
// one-sled rack whose sled moves its VMMs only when told, held before a
// node of its saga until block.release is closed; created gets its answer.
type heldCreate struct {
	rack    *racktest.InProcess
	token   string
	api     *oxide.Client
	block   *blockAt
	created chan error
}

func createHeldAt(t *testing.T, node string, opts ...nexus.Option) heldCreate {
	t.Helper()
	h := heldCreate{block: newBlockAt(node), created: make(chan error, 1)}
	h.rack = racktest.StartInProcess(t, racktest.Options{Backend: racktest.Backends[0], Sleds: 1,
		SledConfig: racktest.EverySled(explicitSleds), NexusOptions: append([]nexus.Option{h.block.option()}, opts...)})
	h.token = h.rack.Token(racktest.FleetAdmin)
	h.api = racktest.NewClient(h.rack.Server().ExternalURL(), h.token).SDK(t)
	if _, err := h.api.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	go func() {
		start := true
		_, err := h.api.InstanceCreate(ctx, oxide.InstanceCreateParams{Project: "p", Body: &oxide.InstanceCreate{
			Name: "vm", Hostname: "vm", Memory: 4 << 30, Ncpus: 2, Start: &start}})
		h.created <- err
	}()
	<-h.block.reached
	return h
}
