package sagas

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sledclient"
)

// InstanceStartParams start an instance on a new VMM. The VMM id is chosen
// by the caller so that every node can recognise its own work after a crash.
// Create is the record an instance-create saga inserts first; nil for a
// start.
type InstanceStartParams struct {
	Instance uuid.UUID       `json:"instance"`
	VMM      uuid.UUID       `json:"vmm"`
	Create   *model.Instance `json:"create,omitempty"`
}

// unlinkedState is what the instance is without the saga's VMM: creating
// while its create saga runs, so that no other request starts or deletes
// it meanwhile; otherwise no VMM.
func (p InstanceStartParams) unlinkedState() model.InstanceState {
	if p.Create != nil {
		return model.InstanceCreating
	}
	return model.InstanceNoVMM
}

// allocated is alloc_vmm's output: where the VMM went and the shape the
// sled reserved for it (zero in the output of a saga from before the shape
// was recorded).
type allocated struct {
	Sled        uuid.UUID `json:"sled"`
	NCPUs       int64     `json:"ncpus,omitempty"`
	MemoryBytes int64     `json:"memory_bytes,omitempty"`
}

// instanceStart: allocate a VMM on a sled with room, link it to the
// instance, register it with the sled-agent, and ask it to run (N7). Undo:
// unregister, mark the VMM saga_unwound, put the instance back to no_vmm.
func instanceStart(d Deps) saga.Template {
	return saga.Template{Name: InstanceStart, Nodes: []saga.Node{
		{Name: "alloc_vmm", Action: saga.ActionWith(d.allocVMM), Undo: saga.UndoWith(d.unwindVMM)},
		{Name: "link_vmm", Action: saga.ActionWith(d.linkVMM), Undo: saga.UndoWith(d.unlinkVMM)},
		{Name: "ensure_registered", Action: saga.ActionWith(d.ensureRegistered), Undo: saga.UndoWith(d.ensureUnregistered)},
		{Name: "ensure_running", Action: saga.ActionWith(d.ensureRunning)},
	}}
}

func (d Deps) allocVMM(ctx context.Context, _ *saga.Context, p InstanceStartParams) (any, error) {
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	sled, err := d.DS.VMMAllocate(ctx, model.VMM{ID: p.VMM, InstanceID: inst.ID, TimeCreated: now,
		Runtime: model.VMMRuntime{State: model.VMMCreating, Generation: 1, TimeUpdated: now}},
		inst.NCPUs, inst.MemoryBytes, d.SledLiveness)
	if err != nil {
		return nil, err
	}
	return allocated{Sled: sled, NCPUs: inst.NCPUs, MemoryBytes: inst.MemoryBytes}, nil
}

// unwindVMM marks the saga's VMM saga_unwound.
func (d Deps) unwindVMM(ctx context.Context, _ *saga.Context, p InstanceStartParams) error {
	return d.markUnwound(ctx, p.VMM)
}

// linked is link_vmm's output: whether the create saga skipped the start
// because its instance was stopped while it was being created.
type linked struct {
	Skipped bool `json:"skipped,omitempty"`
}

func (d Deps) linkVMM(ctx context.Context, sc *saga.Context, p InstanceStartParams) (any, error) {
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return nil, err
	}
	var alloc allocated
	if err := sc.Output("alloc_vmm", &alloc); err != nil {
		return nil, err
	}
	if a := inst.Runtime.ActiveVMM; a != nil && *a == p.VMM {
		return linked{}, nil // linked before a crash
	}
	if p.Create != nil && inst.Runtime.State == model.InstanceNoVMM {
		return linked{Skipped: true}, nil // skipped before a crash
	}
	if p.Create != nil && inst.IntendedState == model.IntendStopped && inst.Runtime.State == model.InstanceCreating {
		return d.skipStart(ctx, inst, p)
	}
	startable := inst.Runtime.State == model.InstanceNoVMM || inst.Runtime.State == model.InstanceFailed
	if p.Create != nil {
		startable = inst.Runtime.State == model.InstanceCreating
	}
	if inst.Runtime.ActiveVMM != nil || !startable {
		return nil, fmt.Errorf("%w: it is %s", model.ErrInstanceBusy, inst.Runtime.State)
	}
	// An update of the stopped instance (N15) may have committed since
	// alloc_vmm reserved its shape: the VMM would then run what its sled
	// did not reserve. The update's generation bump guards the write
	// below; the shape is checked here.
	if alloc.NCPUs != 0 && (alloc.NCPUs != inst.NCPUs || alloc.MemoryBytes != inst.MemoryBytes) {
		return nil, fmt.Errorf("%w: its vCPUs or memory changed while the start was placing it; start it again", model.ErrInstanceBusy)
	}
	vmm := p.VMM
	next := inst.Runtime.Next(time.Now())
	next.State, next.ActiveVMM, next.TargetVMM, next.MigrationID = model.InstanceVMM, &vmm, nil, nil
	if err := d.writeWhileRunningWanted(ctx, inst, next, errStopWanted, "the start was linking its VMM"); err != nil {
		return nil, err
	}
	return linked{}, nil
}

// writeWhileRunningWanted writes next through the generation guard only
// while the instance is wanted running (InstanceUpdateRuntimeIfRunningWanted),
// for a start or a migration about to show the instance starting or
// migrating: stopWanted when a stop or force-terminate has recorded its
// wish, ErrInstanceBusy naming what was under way when anything else
// changed since inst was read.
func (d Deps) writeWhileRunningWanted(ctx context.Context, inst model.Instance, next model.InstanceRuntime, stopWanted error, doing string) error {
	wrote := false
	var err error
	if inst.IntendedState == model.IntendRunning {
		if wrote, err = d.DS.InstanceUpdateRuntimeIfRunningWanted(ctx, inst.ID, next); err != nil {
			return err
		}
		if !wrote {
			inst, err = d.DS.InstanceGet(ctx, inst.ID)
		}
	}
	switch {
	case wrote:
		return nil
	case err == nil && inst.IntendedState != model.IntendRunning:
		return stopWanted
	}
	return fmt.Errorf("%w: it changed while %s", model.ErrInstanceBusy, doing)
}

// errStopWanted ends a start whose instance a stop or force-terminate
// wanted stopped after the start recorded its own wish but before it
// linked its VMM: that call has answered with the instance stopped, so the
// start gives way rather than run it against that answer.
var errStopWanted = fmt.Errorf("%w: a stop or force-terminate asked for it to stay stopped while the start was placing it; start it again", model.ErrInstanceBusy)

// skipStart finishes a create whose instance a stop or force-terminate
// wanted stopped before its VMM was linked: the create succeeds as a
// create without start. The VMM placed for it never reached a sled, and
// ends saga_unwound; the instance leaves `creating` for stopped.
func (d Deps) skipStart(ctx context.Context, inst model.Instance, p InstanceStartParams) (any, error) {
	if err := d.markUnwound(ctx, p.VMM); err != nil {
		return nil, err
	}
	next := inst.Runtime.Next(time.Now())
	next.State = model.InstanceNoVMM
	wrote, err := d.DS.InstanceUpdateRuntime(ctx, inst.ID, next)
	if err != nil {
		return nil, err
	}
	if !wrote {
		return nil, fmt.Errorf("%w: it changed while its create was skipping the start", model.ErrInstanceBusy)
	}
	return linked{Skipped: true}, nil
}

// startSkipped says whether link_vmm skipped the start (see skipStart):
// the nodes after it then have nothing to do.
func startSkipped(sc *saga.Context) (bool, error) {
	var l linked
	err := sc.Output("link_vmm", &l)
	return l.Skipped, err
}

func (d Deps) unlinkVMM(ctx context.Context, _ *saga.Context, p InstanceStartParams) error {
	_, err := d.DS.InstanceRewrite(ctx, p.Instance, func(inst model.Instance) (model.InstanceRuntime, bool, error) {
		if a := inst.Runtime.ActiveVMM; a == nil || *a != p.VMM {
			return inst.Runtime, false, nil // never linked, or someone (an update saga) unlinked it
		}
		next := inst.Runtime.Next(time.Now())
		next.State, next.ActiveVMM, next.TargetVMM, next.MigrationID = p.unlinkedState(), nil, nil, nil
		return next, true, nil
	})
	return err
}

// sledOf is the sled alloc_vmm placed the saga's VMM on.
func sledOf(sc *saga.Context) (uuid.UUID, error) {
	var alloc allocated
	err := sc.Output("alloc_vmm", &alloc)
	return alloc.Sled, err
}

func (d Deps) ensureRegistered(ctx context.Context, sc *saga.Context, p InstanceStartParams) (any, error) {
	if skipped, err := startSkipped(sc); skipped || err != nil {
		return nil, err
	}
	sled, err := sledOf(sc)
	if err != nil {
		return nil, err
	}
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return nil, err
	}
	return nil, d.register(ctx, sled, sledclient.Registration{VMM: p.VMM, Instance: p.Instance, Spec: inst.Spec()})
}

// ensureUnregistered undoes registration (see unregister).
func (d Deps) ensureUnregistered(ctx context.Context, sc *saga.Context, p InstanceStartParams) error {
	sled, err := sledOf(sc)
	if err != nil {
		return err
	}
	return d.unregister(ctx, sled, p.VMM)
}

// ensureRunning asks the VMM to run, then takes a last look at what the
// user wants: a stop that arrived while the VMM was being created found
// nothing its sled knew to stop and left it to this saga (the stop, for
// its part, looks again after recording its wish, so one of the two always
// sees the other).
func (d Deps) ensureRunning(ctx context.Context, sc *saga.Context, p InstanceStartParams) (any, error) {
	if skipped, err := startSkipped(sc); skipped || err != nil {
		return nil, err
	}
	sled, err := sledOf(sc)
	if err != nil {
		return nil, err
	}
	if err := d.ensureState(ctx, sled, p.VMM, model.TargetRunning); err != nil {
		if p.Create != nil && d.stopWanted(ctx, p.Instance) {
			// A stop or force-terminate answered for the instance
			// meanwhile (and ended its VMM): the create stands, as a
			// create the user then stopped, rather than deleting what
			// that answer was about.
			return nil, nil
		}
		return nil, err
	}
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return nil, err
	}
	if inst.IntendedState != model.IntendStopped {
		return nil, nil
	}
	return nil, d.ensureState(ctx, sled, p.VMM, model.TargetStopped)
}

// stopWanted says whether the instance is now wanted stopped.
func (d Deps) stopWanted(ctx context.Context, id uuid.UUID) bool {
	inst, err := d.DS.InstanceGet(ctx, id)
	return err == nil && inst.IntendedState == model.IntendStopped
}
