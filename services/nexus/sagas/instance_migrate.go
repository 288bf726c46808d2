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

// InstanceMigrateParams move an instance to a sled. The migration and
// target VMM ids are chosen by the caller so that every node can recognise
// its own work after a crash.
type InstanceMigrateParams struct {
	Instance  uuid.UUID `json:"instance"`
	DstSled   uuid.UUID `json:"dst_sled"`
	Migration uuid.UUID `json:"migration"`
	TargetVMM uuid.UUID `json:"target_vmm"`
}

type migrationSource struct {
	VMM  uuid.UUID `json:"vmm"`
	Sled uuid.UUID `json:"sled"`
}

// instanceMigrate: allocate a target VMM on the destination sled, record
// the migration, point the instance at it, register the target with its
// sled-agent as a migration target, and tell it to pull the guest. The
// sled-agents then report both sides' progress and the update saga
// resolves the outcome (N6). Undo: unregister the target, clear the
// instance's migration ids, mark the target saga_unwound.
func instanceMigrate(d Deps) saga.Template {
	return saga.Template{Name: InstanceMigrate, Nodes: []saga.Node{
		{Name: "alloc_target", Action: saga.ActionWith(d.allocTarget), Undo: saga.UndoWith(d.unwindTarget)},
		{Name: "create_migration", Action: saga.ActionWith(d.createMigration)},
		{Name: "set_migration_ids", Action: saga.ActionWith(d.setMigrationIDs), Undo: saga.UndoWith(d.clearMigrationIDs)},
		{Name: "ensure_target_registered", Action: saga.ActionWith(d.ensureTargetRegistered),
			Undo: saga.UndoWith(d.ensureTargetUnregistered)},
		{Name: "ensure_target_migrating", Action: saga.ActionWith(d.ensureTargetMigrating)},
	}}
}

// migratable returns the instance's running active VMM, or why it cannot
// migrate now.
func (d Deps) migratable(ctx context.Context, p InstanceMigrateParams) (model.Instance, model.VMM, error) {
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return inst, model.VMM{}, err
	}
	if inst.Runtime.State != model.InstanceVMM || inst.Runtime.ActiveVMM == nil {
		return inst, model.VMM{}, fmt.Errorf("%w: only a running instance can migrate; it has no VMM", model.ErrInstanceBusy)
	}
	if inst.Runtime.MigrationID != nil {
		return inst, model.VMM{}, fmt.Errorf("%w: it is already migrating", model.ErrInstanceBusy)
	}
	source, err := d.DS.VMMGet(ctx, *inst.Runtime.ActiveVMM)
	if err != nil {
		return inst, source, err
	}
	if source.Runtime.State != model.VMMRunning {
		return inst, source, fmt.Errorf("%w: only a running instance can migrate; its VMM is %s", model.ErrInstanceBusy, source.Runtime.State)
	}
	if source.SledID == p.DstSled {
		return inst, source, fmt.Errorf("%w: the instance already runs on sled %s", model.ErrSameSled, p.DstSled)
	}
	return inst, source, nil
}

func (d Deps) allocTarget(ctx context.Context, _ *saga.Context, p InstanceMigrateParams) (any, error) {
	inst, source, err := d.migratable(ctx, p)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	err = d.DS.VMMAllocateOn(ctx, model.VMM{ID: p.TargetVMM, InstanceID: inst.ID, SledID: p.DstSled, TimeCreated: now,
		Runtime: model.VMMRuntime{State: model.VMMCreating, Generation: 1, TimeUpdated: now}},
		inst.NCPUs, inst.MemoryBytes, d.SledLiveness)
	if err != nil {
		return nil, err
	}
	return migrationSource{VMM: source.ID, Sled: source.SledID}, nil
}

func (d Deps) unwindTarget(ctx context.Context, _ *saga.Context, p InstanceMigrateParams) error {
	return d.markUnwound(ctx, p.TargetVMM)
}

func (d Deps) createMigration(ctx context.Context, sc *saga.Context, p InstanceMigrateParams) (any, error) {
	var src migrationSource
	if err := sc.Output("alloc_target", &src); err != nil {
		return nil, err
	}
	return nil, d.DS.MigrationInsert(ctx, model.Migration{ID: p.Migration, InstanceID: p.Instance,
		SourceVMM: src.VMM, TargetVMM: p.TargetVMM, TimeCreated: time.Now()})
}

// errStopWantedMigrating ends a migration of an instance a stop or
// force-terminate wants stopped: moving a guest that is being stopped
// would show it migrating after those calls answered stopping or stopped.
var errStopWantedMigrating = fmt.Errorf("%w: a stop or force-terminate asked for it to stop; it is not migrated", model.ErrInstanceBusy)

func (d Deps) setMigrationIDs(ctx context.Context, sc *saga.Context, p InstanceMigrateParams) (any, error) {
	var src migrationSource
	if err := sc.Output("alloc_target", &src); err != nil {
		return nil, err
	}
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return nil, err
	}
	rt := inst.Runtime
	if m := rt.MigrationID; m != nil && *m == p.Migration {
		return nil, nil // set before a crash
	}
	if rt.State != model.InstanceVMM || rt.ActiveVMM == nil || *rt.ActiveVMM != src.VMM || rt.MigrationID != nil {
		return nil, fmt.Errorf("%w: it changed while the migration was being prepared", model.ErrInstanceBusy)
	}
	target, migration := p.TargetVMM, p.Migration
	next := rt.Next(time.Now())
	next.TargetVMM, next.MigrationID = &target, &migration
	return nil, d.writeWhileRunningWanted(ctx, inst, next, errStopWantedMigrating, "the migration was being prepared")
}

// clearMigrationIDs points the instance away from the migration, if it
// still points at it; a force-terminate or an update saga may have done so.
func (d Deps) clearMigrationIDs(ctx context.Context, _ *saga.Context, p InstanceMigrateParams) error {
	_, err := d.DS.InstanceRewrite(ctx, p.Instance, func(inst model.Instance) (model.InstanceRuntime, bool, error) {
		if m := inst.Runtime.MigrationID; m == nil || *m != p.Migration {
			return inst.Runtime, false, nil
		}
		next := inst.Runtime.Next(time.Now())
		next.TargetVMM, next.MigrationID = nil, nil
		return next, true, nil
	})
	return err
}

func (d Deps) ensureTargetRegistered(ctx context.Context, sc *saga.Context, p InstanceMigrateParams) (any, error) {
	var src migrationSource
	if err := sc.Output("alloc_target", &src); err != nil {
		return nil, err
	}
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return nil, err
	}
	sourceAddress, err := d.DS.SledAddress(ctx, src.Sled)
	if err != nil {
		return nil, err
	}
	return nil, d.register(ctx, p.DstSled, sledclient.Registration{VMM: p.TargetVMM, Instance: p.Instance, Spec: inst.Spec(),
		Migration: &sledclient.MigrationTarget{Migration: p.Migration, SourceVMM: src.VMM, SourceSledAddress: sourceAddress}})
}

func (d Deps) ensureTargetUnregistered(ctx context.Context, _ *saga.Context, p InstanceMigrateParams) error {
	return d.unregister(ctx, p.DstSled, p.TargetVMM)
}

// ensureTargetMigrating asks the target to take the guest over. A failure
// here does not always mean the target did not: the request may have
// reached it before the answer was lost, or before a crash cut the node's
// first run short, and by then the guest may run on the target alone, so
// the unwind (which unregisters the target) would stop the instance (SPEC
// 7: a failed request changes nothing). So the target is asked where it
// stands: migrating or running means it took the request, the node has
// done its work, and the sleds' reports resolve the migration through the
// update saga (N6). A target that cannot be asked either is left to the
// unwind, which unregisters it (see services/nexus/README.md).
func (d Deps) ensureTargetMigrating(ctx context.Context, _ *saga.Context, p InstanceMigrateParams) (any, error) {
	err := d.ensureState(ctx, p.DstSled, p.TargetVMM, model.TargetMigrationTarget)
	if err == nil {
		return nil, nil
	}
	if rt, stateErr := d.Sleds.VMMState(ctx, p.DstSled, p.TargetVMM); stateErr == nil &&
		(rt.State == model.VMMMigrating || rt.State == model.VMMRunning) {
		return nil, d.record(ctx, p.TargetVMM, rt, nil)
	}
	return nil, err
}
