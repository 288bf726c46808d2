package sagas

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sledclient"
)

// InstanceStartParams start an instance on a new VMM. The VMM id is chosen
// by the caller so that every node can recognise its own work after a crash.
type InstanceStartParams struct {
	Instance uuid.UUID `json:"instance"`
	VMM      uuid.UUID `json:"vmm"`
}

type allocated struct {
	Sled uuid.UUID `json:"sled"`
}

// instanceStart: allocate a VMM on a sled with room, link it to the
// instance, register it with the sled-agent, and ask it to run (N7). Undo:
// unregister, mark the VMM saga_unwound, put the instance back to no_vmm.
func instanceStart(d Deps) saga.Template {
	return saga.Template{Name: InstanceStart, Nodes: []saga.Node{
		{Name: "alloc_vmm", Action: d.allocVMM, Undo: d.unwindVMM},
		{Name: "link_vmm", Action: d.linkVMM, Undo: d.unlinkVMM},
		{Name: "ensure_registered", Action: d.ensureRegistered, Undo: d.ensureUnregistered},
		{Name: "ensure_running", Action: d.ensureRunning},
	}}
}

func (d Deps) allocVMM(ctx context.Context, sc *saga.Context) (any, error) {
	var p InstanceStartParams
	if err := sc.Params(&p); err != nil {
		return nil, err
	}
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	sled, err := d.DS.VMMAllocate(ctx, datastore.VMM{ID: p.VMM, InstanceID: inst.ID, TimeCreated: now,
		Runtime: datastore.VMMRuntime{State: datastore.VMMCreating, Generation: 1, TimeUpdated: now}},
		inst.NCPUs, inst.MemoryBytes, now.Add(-d.SledLiveness))
	if err != nil {
		return nil, err
	}
	return allocated{Sled: sled}, nil
}

// unwindVMM marks the saga's VMM saga_unwound.
func (d Deps) unwindVMM(ctx context.Context, sc *saga.Context) error {
	var p InstanceStartParams
	if err := sc.Params(&p); err != nil {
		return err
	}
	return d.markUnwound(ctx, p.VMM)
}

// markUnwound marks a saga's VMM saga_unwound, after whatever the sled said
// last: nexus owns the generation again once the VMM is unregistered.
func (d Deps) markUnwound(ctx context.Context, id uuid.UUID) error {
	for attempt := 0; attempt < casRetries; attempt++ {
		v, err := d.DS.VMMGet(ctx, id)
		if errors.Is(err, datastore.ErrNotFound) {
			return nil // the action never inserted it
		}
		if err != nil {
			return err
		}
		if v.Runtime.State == datastore.VMMSagaUnwound {
			return nil
		}
		wrote, err := d.DS.VMMUpdateRuntime(ctx, v.ID, datastore.VMMRuntime{State: datastore.VMMSagaUnwound,
			Generation: v.Runtime.Generation + 1, TimeUpdated: time.Now()})
		if err != nil || wrote {
			return err
		}
	}
	return fmt.Errorf("VMM %s kept changing while being marked saga_unwound", id)
}

func (d Deps) linkVMM(ctx context.Context, sc *saga.Context) (any, error) {
	var p InstanceStartParams
	if err := sc.Params(&p); err != nil {
		return nil, err
	}
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return nil, err
	}
	if a := inst.Runtime.ActiveVMM; a != nil && *a == p.VMM {
		return nil, nil // linked before a crash
	}
	if inst.Runtime.ActiveVMM != nil || (inst.Runtime.State != datastore.InstanceNoVMM && inst.Runtime.State != datastore.InstanceFailed) {
		return nil, fmt.Errorf("%w: it is %s", ErrInstanceBusy, inst.Runtime.State)
	}
	vmm := p.VMM
	next := datastore.InstanceRuntime{State: datastore.InstanceVMM, ActiveVMM: &vmm,
		Generation: inst.Runtime.Generation + 1, TimeUpdated: time.Now()}
	wrote, err := d.DS.InstanceUpdateRuntime(ctx, inst.ID, next)
	if err != nil {
		return nil, err
	}
	if !wrote {
		return nil, fmt.Errorf("%w: it changed while the start was linking its VMM", ErrInstanceBusy)
	}
	return nil, nil
}

func (d Deps) unlinkVMM(ctx context.Context, sc *saga.Context) error {
	var p InstanceStartParams
	if err := sc.Params(&p); err != nil {
		return err
	}
	for attempt := 0; attempt < casRetries; attempt++ {
		inst, err := d.DS.InstanceGet(ctx, p.Instance)
		if err != nil {
			return err
		}
		if a := inst.Runtime.ActiveVMM; a == nil || *a != p.VMM {
			return nil // never linked, or someone (an update saga) unlinked it
		}
		wrote, err := d.DS.InstanceUpdateRuntime(ctx, inst.ID, datastore.InstanceRuntime{State: datastore.InstanceNoVMM,
			Generation: inst.Runtime.Generation + 1, TimeUpdated: time.Now()})
		if err != nil || wrote {
			return err
		}
	}
	return fmt.Errorf("instance %s kept changing while its VMM was unlinked", p.Instance)
}

func (d Deps) sledOf(ctx context.Context, sc *saga.Context) (sledagentv1.SledAgentClient, uuid.UUID, InstanceStartParams, error) {
	var (
		p     InstanceStartParams
		alloc allocated
	)
	if err := sc.Params(&p); err != nil {
		return nil, uuid.Nil, p, err
	}
	if err := sc.Output("alloc_vmm", &alloc); err != nil {
		return nil, uuid.Nil, p, err
	}
	client, err := d.Sleds.Client(ctx, alloc.Sled)
	return client, alloc.Sled, p, err
}

// writeRuntime records a runtime a sled-agent answered, through the guard;
// a stale one is simply not written.
func (d Deps) writeRuntime(ctx context.Context, vmm uuid.UUID, rt *sledagentv1.VmmRuntime) error {
	if rt == nil {
		return nil
	}
	runtime, err := sledclient.Runtime(rt)
	if err != nil {
		return err
	}
	_, err = d.DS.VMMUpdateRuntime(ctx, vmm, runtime)
	return err
}

func (d Deps) ensureRegistered(ctx context.Context, sc *saga.Context) (any, error) {
	client, sled, p, err := d.sledOf(ctx, sc)
	if err != nil {
		return nil, err
	}
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return nil, err
	}
	return nil, d.register(ctx, client, sled, p.VMM, &sledagentv1.EnsureRegisteredRequest{
		VmmId:          p.VMM.String(),
		InstanceId:     p.Instance.String(),
		Spec:           &sledagentv1.VmmSpec{Ncpus: int32(inst.NCPUs), MemoryBytes: inst.MemoryBytes, Hostname: inst.Hostname},
		InitialRuntime: &sledagentv1.VmmRuntime{Generation: 1},
	})
}

// register registers a VMM with its sled-agent and records the answer. A
// force-terminate may have ended the VMM in the database while the request
// was on its way (its EnsureUnregistered found nothing to remove, so it
// wrote the VMM's end itself): the VMM is then unregistered again, its
// recorded end stands, and the node fails, so its saga unwinds instead of
// leaving a VMM running on a sled that no instance points at (F10).
func (d Deps) register(ctx context.Context, client sledagentv1.SledAgentClient, sled, vmm uuid.UUID, req *sledagentv1.EnsureRegisteredRequest) error {
	resp, err := client.EnsureRegistered(ctx, req)
	if err != nil {
		return sledclient.Classify(sled, err)
	}
	if err := d.writeRuntime(ctx, vmm, resp.GetRuntime()); err != nil {
		return err
	}
	v, err := d.DS.VMMGet(ctx, vmm)
	if err != nil {
		return err
	}
	if !v.Runtime.State.Terminal() {
		return nil
	}
	if _, err := client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: vmm.String()}); err != nil {
		return sledclient.Classify(sled, err)
	}
	return fmt.Errorf("%w: VMM %s was terminated (%s) while it was being registered", ErrInstanceBusy, vmm, v.Runtime.State)
}

// ensureUnregistered undoes registration. A sled that does not know the VMM
// (it was force-terminated meanwhile, or the sled restarted) answers empty,
// which is success; a sled that cannot be reached fails the undo, which the
// engine retries and, failing that, reports the saga stuck.
func (d Deps) ensureUnregistered(ctx context.Context, sc *saga.Context) error {
	client, sled, p, err := d.sledOf(ctx, sc)
	if err != nil {
		return err
	}
	resp, err := client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: p.VMM.String()})
	if err != nil {
		return sledclient.Classify(sled, err)
	}
	return d.writeRuntime(ctx, p.VMM, resp.GetUpdatedRuntime())
}

// ensureRunning asks the VMM to run, then takes a last look at what the
// user wants: a stop that arrived while the VMM was being created found
// nothing its sled knew to stop and left it to this saga (the stop, for
// its part, looks again after recording its wish, so one of the two always
// sees the other).
func (d Deps) ensureRunning(ctx context.Context, sc *saga.Context) (any, error) {
	client, sled, p, err := d.sledOf(ctx, sc)
	if err != nil {
		return nil, err
	}
	resp, err := client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: p.VMM.String(),
		Target: sledagentv1.VmmTargetState_VMM_TARGET_STATE_RUNNING})
	if err != nil {
		return nil, sledclient.Classify(sled, err)
	}
	if err := d.writeRuntime(ctx, p.VMM, resp.GetRuntime()); err != nil {
		return nil, err
	}
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return nil, err
	}
	if inst.IntendedState != datastore.IntendStopped {
		return nil, nil
	}
	resp, err = client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: p.VMM.String(),
		Target: sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED})
	if err != nil {
		return nil, sledclient.Classify(sled, err)
	}
	return nil, d.writeRuntime(ctx, p.VMM, resp.GetRuntime())
}
