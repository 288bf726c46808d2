package nexus_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/racktest"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

// instanceJSON is the part of an Oxide instance these tests read.
type instanceJSON struct {
	ID       string `json:"id"`
	RunState string `json:"run_state"`
}

// forceTerminate calls POST /v1/instances/{instance}/force-terminate and
// returns the status, the instance (on 200) and the error body otherwise.
func forceTerminate(t *testing.T, n *nexus.Server, token, instance, project string) (int, instanceJSON, racktest.Error) {
	t.Helper()
	path := "/v1/instances/" + instance + "/force-terminate"
	if project != "" {
		path += "?project=" + project
	}
	return instanceCall(t, racktest.NewClient(n.ExternalURL(), token).Call(t, http.MethodPost, path, ""))
}

// instanceCall reads an answer that is an instance on 200 and an Oxide
// error otherwise.
func instanceCall(t *testing.T, resp racktest.Response) (int, instanceJSON, racktest.Error) {
	t.Helper()
	var inst instanceJSON
	if resp.Status == http.StatusOK {
		if err := resp.JSON(&inst); err != nil {
			t.Fatal(err)
		}
	}
	return resp.Status, inst, resp.Error()
}

func mustForceTerminate(t *testing.T, n *nexus.Server, token, instance, project, want string) {
	t.Helper()
	code, inst, eb := forceTerminate(t, n, token, instance, project)
	if code != http.StatusOK || inst.RunState != want {
		t.Fatalf("force-terminate: %d %+v %+v, want 200 %s", code, inst, eb, want)
	}
}

var explicitSleds = func(c *sledconfig.Config) { c.HypervisorMode = "explicit" }

// startedInstance creates project p and instance vm on an explicit-mode
// rack and steps its VMM to running.
func startedInstance(t *testing.T, n *nexus.Server, c *oxide.Client, agents []*sledagenttest.Agent) (model.Instance, model.VMM, *sledagenttest.Agent) {
	t.Helper()
	if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	created := createInstance(t, c, "p", "vm", true)
	inst, err := n.DataStore().InstanceGet(ctx, uuid.MustParse(created.Id))
	if err != nil {
		t.Fatal(err)
	}
	vmm, err := n.DataStore().VMMGet(ctx, *inst.Runtime.ActiveVMM)
	if err != nil {
		t.Fatal(err)
	}
	sled := agentOf(t, agents, vmm.SledID)
	sled.Step(vmm.ID.String(), true)
	waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
	vmm, _ = n.DataStore().VMMGet(ctx, vmm.ID)
	return inst, vmm, sled
}

func agentOf(t *testing.T, agents []*sledagenttest.Agent, sled uuid.UUID) *sledagenttest.Agent {
	t.Helper()
	for _, a := range agents {
		if a.Inventory().GetSledId() == sled.String() {
			return a
		}
	}
	t.Fatalf("no agent runs sled %s", sled)
	return nil
}

func vmmState(t *testing.T, n *nexus.Server, id uuid.UUID) model.VMMRuntime {
	t.Helper()
	v, err := n.DataStore().VMMGet(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return v.Runtime
}

func blackHole(t *testing.T, a *sledagenttest.Agent, on bool) {
	t.Helper()
	if _, err := a.Sim.SetBlackHole(ctx, &sledagentv1.SetBlackHoleRequest{Enabled: on}); err != nil {
		t.Fatal(err)
	}
}

func TestF1_F4_ForceTerminateUnregistersTheVMMAndAnswersStopped(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1, explicitSleds)
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			inst, vmm, sled := startedInstance(t, n, racktest.NewClient(n.ExternalURL(), token).SDK(t), agents)
			mustForceTerminate(t, n, token, "vm", "p", "stopped")
			if k := len(sled.Inventory().GetVmms()); k != 0 {
				t.Fatalf("%d VMMs still registered after force-terminate", k)
			}
			// F4: the sled's answer, destroyed at the next generation, is
			// what the database records.
			if rt := vmmState(t, n, vmm.ID); rt.State != model.VMMDestroyed || rt.Generation != vmm.Runtime.Generation+1 {
				t.Fatalf("VMM after force-terminate: %+v, want destroyed at generation %d", rt, vmm.Runtime.Generation+1)
			}
			got, _ := n.DataStore().InstanceGet(ctx, inst.ID)
			if got.Runtime.State != model.InstanceNoVMM || got.Runtime.ActiveVMM != nil ||
				got.IntendedState != model.IntendStopped || got.UpdaterID != nil {
				t.Fatalf("instance after force-terminate: %+v intended %s updater %v", got.Runtime, got.IntendedState, got.UpdaterID)
			}
			// By id as well as by name; F8: again is 200 stopped.
			mustForceTerminate(t, n, token, inst.ID.String(), "", "stopped")
		})
	}
}

func TestF5_F11_AVMMTheSledForgotIsMarkedFailedAndTheInstanceStaysUsable(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1, explicitSleds)
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			c := racktest.NewClient(n.ExternalURL(), token).SDK(t)
			_, vmm, sled := startedInstance(t, n, c, agents)
			if _, err := sled.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: vmm.ID.String()}); err != nil {
				t.Fatal(err)
			}
			mustForceTerminate(t, n, token, "vm", "p", "failed")
			if rt := vmmState(t, n, vmm.ID); rt.State != model.VMMFailed || rt.FailureReason != "no_such_vmm" ||
				rt.Generation != vmm.Runtime.Generation+1 {
				t.Fatalf("forgotten VMM after force-terminate: %+v", rt)
			}
			// F11: start, stop, delete all work on it.
			if _, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"}); err != nil {
				t.Fatal(err)
			}
			sled.Step("", true)
			waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
			mustForceTerminate(t, n, token, "vm", "p", "stopped")
			if _, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"}); err != nil {
				t.Fatal(err)
			}
			sled.Step("", true)
			running := waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
			again := vmmOf(t, n, running.Id)
			if _, err := sled.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: again.String()}); err != nil {
				t.Fatal(err)
			}
			mustForceTerminate(t, n, token, "vm", "p", "failed")
			if inst, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"}); err != nil || inst.RunState != oxide.InstanceStateStopped {
				t.Fatalf("stopping the failed instance: %+v, %v", inst, err)
			}
			if err := c.InstanceDelete(ctx, oxide.InstanceDeleteParams{Project: "p", Instance: "vm"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func vmmOf(t *testing.T, n *nexus.Server, instance string) uuid.UUID {
	t.Helper()
	inst, err := n.DataStore().InstanceGet(ctx, uuid.MustParse(instance))
	if err != nil || inst.Runtime.ActiveVMM == nil {
		t.Fatalf("instance %s has no active VMM: %+v, %v", instance, inst.Runtime, err)
	}
	return *inst.Runtime.ActiveVMM
}

func TestF2_AForceTerminatedInstanceThatEndedFailedIsNeverReincarnated(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1, explicitSleds)
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			inst, vmm, sled := startedInstance(t, n, racktest.NewClient(n.ExternalURL(), token).SDK(t), agents)
			if inst.AutoRestartPolicy != model.AutoRestartBestEffort || inst.IntendedState != model.IntendRunning {
				t.Fatalf("the instance should be one reincarnation would restart: %+v", inst)
			}
			if _, err := sled.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: vmm.ID.String()}); err != nil {
				t.Fatal(err)
			}
			mustForceTerminate(t, n, token, "vm", "p", "failed")
			// It never restarted, so no cooldown holds it back: only the
			// recorded wish (stopped) does.
			activate(t, n, nexus.TaskReincarnation)
			got, _ := n.DataStore().InstanceGet(ctx, inst.ID)
			if got.Runtime.State != model.InstanceFailed || got.TimeLastAutoRestarted != nil || len(sled.Inventory().GetVmms()) != 0 {
				t.Fatalf("after reincarnation: %+v, auto-restarted at %v", got.Runtime, got.TimeLastAutoRestarted)
			}
		})
	}
}

func TestF3_AVMMAlreadyEndedInTheDatabaseIsNotSentToItsSled(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1, explicitSleds)
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			_, vmm, sled := startedInstance(t, n, racktest.NewClient(n.ExternalURL(), token).SDK(t), agents)
			// Its end is recorded but the update saga has not run yet; the
			// sled answers nobody, so a call to it would time out (F7).
			if wrote, err := n.DataStore().VMMUpdateRuntime(ctx, vmm.ID, model.VMMRuntime{State: model.VMMDestroyed,
				Generation: vmm.Runtime.Generation + 3, TimeUpdated: time.Now()}); !wrote || err != nil {
				t.Fatalf("(%v, %v)", wrote, err)
			}
			blackHole(t, sled, true)
			mustForceTerminate(t, n, token, "vm", "p", "stopped")
		})
	}
}

// The trap of the omicron review: a stop races the force-terminate and
// destroys the VMM after force-terminate read it but before its
// EnsureUnregistered lands. The VMM must end destroyed, the instance
// stopped, never failed, and force-terminate starts no update of its own
// (the stop's end already settled the instance).
func TestF5_ARacingStopThatDestroyedTheVMMFirstIsNotAFailure(t *testing.T) {
	for _, backend := range racktest.Backends {
		for _, forgotten := range []bool{false, true} {
			name := string(backend) + "/sled_remembers_the_end"
			if forgotten {
				// The sled has forgotten even the end (it restarted): its
				// empty answer makes force-terminate try to mark the VMM
				// failed, which the generation guard refuses.
				name = string(backend) + "/sled_forgot_the_end"
			}
			t.Run(name, func(t *testing.T) {
				r := rack(t, backend, 1, explicitSleds)
				n, agents := r.Server(), r.Agents()
				token := r.Token(racktest.FleetAdmin)
				c := racktest.NewClient(n.ExternalURL(), token).SDK(t)
				inst, vmm, sled := startedInstance(t, n, c, agents)
				if _, err := c.InstanceStop(ctx, oxide.InstanceStopParams{Project: "p", Instance: "vm"}); err != nil {
					t.Fatal(err)
				}
				blackHole(t, sled, true)
				done := make(chan struct{})
				var (
					code int
					got  instanceJSON
					eb   racktest.Error
				)
				go func() {
					defer close(done)
					code, got, eb = forceTerminate(t, n, token, "vm", "p")
				}()
				sled.WaitHeld(sledagentv1.SledAgent_EnsureUnregistered_FullMethodName, vmm.ID.String())
				// The stop finishes on the sled and nexus hears of it.
				sled.Step(vmm.ID.String(), true)
				waitInstance(t, n, inst.ID, func(i model.Instance) error {
					if i.Runtime.State != model.InstanceNoVMM || i.UpdaterID != nil {
						return fmt.Errorf("instance runtime %+v, updater %v", i.Runtime, i.UpdaterID)
					}
					return nil
				})
				if forgotten {
					if _, err := sled.Sim.ForgetVmm(ctx, &sledagentv1.ForgetVmmRequest{VmmId: vmm.ID.String()}); err != nil {
						t.Fatal(err)
					}
				}
				sagasStarted, _ := sample(scrape(t, n), "nexus_sagas_total", labels("outcome", "started"))
				blackHole(t, sled, false)
				<-done
				if code != http.StatusOK || got.RunState != "stopped" {
					t.Fatalf("force-terminate racing a stop: %d %+v %+v, want 200 stopped", code, got, eb)
				}
				if rt := vmmState(t, n, vmm.ID); rt.State != model.VMMDestroyed || rt.FailureReason != "" {
					t.Fatalf("VMM after the race: %+v, want destroyed", rt)
				}
				if after, _ := sample(scrape(t, n), "nexus_sagas_total", labels("outcome", "started")); after != sagasStarted {
					t.Fatalf("force-terminate started %v sagas after a racing stop settled the instance", after-sagasStarted)
				}
			})
		}
	}
}

func TestF7_AnUnreachableSledIs503NamingItAndOnlyTheWishChanges(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1, SledConfig: racktest.EverySled(explicitSleds),
				NexusConfig: func(_ int, c *config.Config) { c.SledUnreachableBound = duration.Duration(300 * time.Millisecond) }})
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			inst, vmm, sled := startedInstance(t, n, racktest.NewClient(n.ExternalURL(), token).SDK(t), agents)
			before, _ := n.DataStore().InstanceGet(ctx, inst.ID)
			blackHole(t, sled, true)
			code, _, eb := forceTerminate(t, n, token, "vm", "p")
			if code != http.StatusServiceUnavailable || eb.ErrorCode != "ServiceNotAvailable" || !strings.Contains(eb.Message, vmm.SledID.String()) {
				t.Fatalf("force-terminate with the sled black-holed: %d %+v, want 503 ServiceNotAvailable naming sled %s", code, eb, vmm.SledID)
			}
			after, _ := n.DataStore().InstanceGet(ctx, inst.ID)
			if after.Runtime.Generation != before.Runtime.Generation || vmmState(t, n, vmm.ID).Generation != vmm.Runtime.Generation ||
				after.IntendedState != model.IntendStopped {
				t.Fatalf("an unreachable sled changed more than the intended state:\n before %+v %+v\n after  %+v %+v",
					before.Runtime, vmm.Runtime, after.Runtime, vmmState(t, n, vmm.ID))
			}
			blackHole(t, sled, false)
			mustForceTerminate(t, n, token, "vm", "p", "stopped")
			if len(sled.Inventory().GetVmms()) != 0 {
				t.Fatal("the VMM is still registered")
			}
		})
	}
}

func TestF8_AStoppedInstanceCallsNoSledAndAGoneOneIs404(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1, explicitSleds)
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			c := racktest.NewClient(n.ExternalURL(), token).SDK(t)
			if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
				t.Fatal(err)
			}
			created := createInstance(t, c, "p", "vm", false)
			blackHole(t, agents[0], true)
			before, _ := n.DataStore().InstanceGet(ctx, uuid.MustParse(created.Id))
			mustForceTerminate(t, n, token, "vm", "p", "stopped")
			after, _ := n.DataStore().InstanceGet(ctx, uuid.MustParse(created.Id))
			if after.Runtime.Generation != before.Runtime.Generation {
				t.Fatalf("force-terminating a stopped instance changed its runtime: %+v -> %+v", before.Runtime, after.Runtime)
			}
			if err := c.InstanceDelete(ctx, oxide.InstanceDeleteParams{Project: "p", Instance: "vm"}); err != nil {
				t.Fatal(err)
			}
			for _, ref := range []struct{ instance, project string }{{"vm", "p"}, {created.Id, ""}, {uuid.NewString(), ""}} {
				if code, _, eb := forceTerminate(t, n, token, ref.instance, ref.project); code != http.StatusNotFound || eb.ErrorCode != "ObjectNotFound" {
					t.Fatalf("force-terminate of %v: %d %+v, want 404 ObjectNotFound", ref, code, eb)
				}
			}
		})
	}
}

// blockAt stops the first saga of template at node, before its action,
// until the test releases it.
type blockAt struct {
	node    string
	reached chan struct{}
	release chan struct{}
	once    bool
}

func newBlockAt(node string) *blockAt {
	return &blockAt{node: node, reached: make(chan struct{}), release: make(chan struct{})}
}

func (b *blockAt) option() nexus.Option {
	return nexus.WithSagaOptions(saga.WithHooks(saga.Hooks{BeforeNode: func(_ uuid.UUID, node string) {
		if node != b.node || b.once {
			return
		}
		b.once = true
		close(b.reached)
		<-b.release
	}}))
}

// startInBackground creates instance "vm" of a new project "p", stopped,
// and starts it from another goroutine: a test's hook holds the start saga
// at the node the test stages its race at.
func startInBackground(t *testing.T, c *oxide.Client) (*oxide.Instance, <-chan error) {
	t.Helper()
	if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	created := createInstance(t, c, "p", "vm", false)
	started := make(chan error, 1)
	go func() {
		_, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"})
		started <- err
	}()
	return created, started
}

func TestF10_AForceTerminateBetweenRegisterAndRunUnwindsTheStart(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			block := newBlockAt("ensure_running")
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1, SledConfig: racktest.EverySled(explicitSleds),
				NexusOptions: []nexus.Option{block.option()}})
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			c := racktest.NewClient(n.ExternalURL(), token).SDK(t)
			created, started := startInBackground(t, c)
			<-block.reached // registered on the sled, not yet asked to run
			if k := len(agents[0].Inventory().GetVmms()); k != 1 {
				t.Fatalf("%d VMMs registered at ensure_running", k)
			}
			vmm := vmmOf(t, n, created.Id)
			mustForceTerminate(t, n, token, "vm", "p", "stopped")
			close(block.release)
			if err := <-started; err == nil {
				t.Fatal("the start whose VMM was force-terminated succeeded")
			}
			if rt := vmmState(t, n, vmm); rt.State != model.VMMSagaUnwound {
				t.Fatalf("the start saga's VMM is %s after it unwound, want saga_unwound", rt.State)
			}
			inst := waitRunState(t, c, "p", "vm", oxide.InstanceStateStopped)
			if len(agents[0].Inventory().GetVmms()) != 0 {
				t.Fatal("a VMM is left on the sled")
			}
			if _, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Instance: oxide.NameOrId(inst.Id)}); err != nil {
				t.Fatal(err)
			}
			agents[0].Step("", true)
			waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
		})
	}
}

// F2, F9, R1: a force-terminate that lands after a start recorded its wish
// but before the start linked its VMM finds no VMM and answers `stopped`
// (F8). The start then gives way (409) rather than link a VMM against that
// answer: the instance never shows `stopping` or `starting` afterwards, no
// VMM reaches the sled, and it starts again normally.
func TestF9_AStartThatHadNotLinkedItsVMMWhenAForceTerminateAnsweredStoppedGivesWay(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			var (
				mu       sync.Mutex
				once     bool
				pastLink []string
				reached  = make(chan struct{})
				release  = make(chan struct{})
			)
			hooks := saga.Hooks{BeforeNode: func(_ uuid.UUID, node string) {
				mu.Lock()
				switch {
				case node == "link_vmm" && !once:
					once = true
					mu.Unlock()
					close(reached)
					<-release
					return
				case node == "ensure_registered":
					pastLink = append(pastLink, node)
				}
				mu.Unlock()
			}}
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1, SledConfig: racktest.EverySled(explicitSleds),
				NexusOptions: []nexus.Option{nexus.WithSagaOptions(saga.WithHooks(hooks))}})
			n, agents := r.Server(), r.Agents()
			token := r.Token(racktest.FleetAdmin)
			c := racktest.NewClient(n.ExternalURL(), token).SDK(t)
			created, started := startInBackground(t, c)
			<-reached // the start wants it running and has placed its VMM, not linked it
			mustForceTerminate(t, n, token, "vm", "p", "stopped")
			close(release)
			var oxErr *oxide.HTTPError
			if err := <-started; !errors.As(err, &oxErr) || oxErr.HTTPResponse.StatusCode != http.StatusConflict {
				t.Fatalf("the start that lost to the force-terminate answered %v, want 409", err)
			}
			mu.Lock()
			linked := slices.Clone(pastLink)
			mu.Unlock()
			if len(linked) != 0 {
				t.Fatalf("the start went on to %v after the force-terminate answered stopped", linked)
			}
			if inst, err := c.InstanceView(ctx, oxide.InstanceViewParams{Instance: oxide.NameOrId(created.Id)}); err != nil ||
				inst.RunState != oxide.InstanceStateStopped {
				t.Fatalf("after the force-terminate answered stopped: %+v, %v", inst, err)
			}
			if k := len(agents[0].Inventory().GetVmms()); k != 0 {
				t.Fatalf("%d VMMs registered on the sled", k)
			}
			if _, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Instance: oxide.NameOrId(created.Id)}); err != nil {
				t.Fatal(err)
			}
			agents[0].Step("", true)
			waitRunState(t, c, "p", "vm", oxide.InstanceStateRunning)
		})
	}
}

func TestF12_EachForceTerminateIsLoggedAndCountedByOutcome(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	r := racktest.StartInProcess(t, racktest.Options{Sleds: 1, SledConfig: racktest.EverySled(explicitSleds), Log: zap.New(core)})
	n, agents := r.Server(), r.Agents()
	token := r.InProcessNexus(0).Token("test-admin", app.Grant{FleetAdmin: true})
	inst, vmm, _ := startedInstance(t, n, racktest.NewClient(n.ExternalURL(), token).SDK(t), agents)
	resp := racktest.NewClient(n.ExternalURL(), token).Call(t, http.MethodPost, "/v1/instances/vm/force-terminate?project=p", "")
	requestID := resp.Header.Get("x-request-id")
	if resp.Status != http.StatusOK || requestID == "" {
		t.Fatalf("force-terminate: %d, request id %q", resp.Status, requestID)
	}
	mustForceTerminate(t, n, token, "vm", "p", "stopped")
	entries := logs.FilterMessage("force-terminated instance").FilterField(zap.String("request_id", requestID)).All()
	if len(entries) != 1 {
		t.Fatalf("%d log lines for force-terminate request %s, want 1", len(entries), requestID)
	}
	fields := entries[0].ContextMap()
	vmms, _ := fields["vmms"].([]any)
	if fields["caller"] != "test-admin" || fields["instance_id"] != inst.ID.String() || fields["outcome"] != "ok" ||
		len(vmms) != 1 || !strings.Contains(fmt.Sprint(vmms[0]), vmm.ID.String()+"@"+vmm.SledID.String()+": destroyed") {
		t.Fatalf("force-terminate logged %v", fields)
	}
	if got, ok := sample(scrape(t, n), "nexus_instance_force_terminate_total", labels("outcome", "ok")); !ok || got != 2 {
		t.Fatalf("nexus_instance_force_terminate_total{outcome=ok} = %v (%v), want 2", got, ok)
	}
}

func TestN5_ForceTerminateNeedsACollaborator(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := rack(t, backend, 1, explicitSleds)
			n, agents := r.Server(), r.Agents()
			admin := r.Token(racktest.FleetAdmin)
			inst, _, _ := startedInstance(t, n, racktest.NewClient(n.ExternalURL(), admin).SDK(t), agents)
			other, err := racktest.NewClient(n.ExternalURL(), admin).SDK(t).ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "other"}})
			if err != nil {
				t.Fatal(err)
			}
			viewer := r.InProcessNexus(0).Token("viewer", app.Grant{Project: inst.ProjectID.String(), Role: "viewer"})
			outsider := r.InProcessNexus(0).Token("outsider", app.Grant{Project: other.Id, Role: "collaborator"})
			// By name and by id (the id is authorized by the wish's own
			// statement): 403 for a viewer, 404 for whoever may not see the
			// project (N10: it learns nothing of its instances), and
			// nothing changes.
			for _, ref := range []struct {
				token, instance, project string
				code                     int
				errorCode                string
			}{
				{viewer, "vm", "p", http.StatusForbidden, "Forbidden"},
				{viewer, inst.ID.String(), "", http.StatusForbidden, "Forbidden"},
				{outsider, inst.ID.String(), "", http.StatusNotFound, "ObjectNotFound"},
			} {
				if code, _, eb := forceTerminate(t, n, ref.token, ref.instance, ref.project); code != ref.code || eb.ErrorCode != ref.errorCode {
					t.Fatalf("force-terminate of %s without the role: %d %+v, want %d", ref.instance, code, eb, ref.code)
				}
				if got, _ := n.DataStore().InstanceGet(ctx, inst.ID); got.IntendedState != model.IntendRunning ||
					got.Runtime.State != model.InstanceVMM {
					t.Fatalf("a refused force-terminate changed the instance: %+v, intended %s", got.Runtime, got.IntendedState)
				}
			}
			if code, _, _ := forceTerminate(t, n, "", "vm", "p"); code != http.StatusUnauthorized {
				t.Fatalf("an anonymous force-terminate: %d, want 401", code)
			}
			if code, _, eb := forceTerminate(t, n, admin, "Not_A_Name", "p"); code != http.StatusBadRequest || !strings.Contains(eb.Message, "instance") {
				t.Fatalf("a malformed name: %d %+v, want 400 naming instance", code, eb)
			}
			collaborator := r.InProcessNexus(0).Token("collab", app.Grant{Project: inst.ProjectID.String(), Role: "collaborator"})
			mustForceTerminate(t, n, collaborator, inst.ID.String(), "", "stopped")
		})
	}
}
