package sagas

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus/datastore"
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
		{Name: "alloc_target", Action: d.allocTarget, Undo: d.unwindTarget},
		{Name: "create_migration", Action: d.createMigration},
		{Name: "set_migration_ids", Action: d.setMigrationIDs, Undo: d.clearMigrationIDs},
		{Name: "ensure_target_registered", Action: d.ensureTargetRegistered, Undo: d.ensureTargetUnregistered},
		{Name: "ensure_target_migrating", Action: d.ensureTargetMigrating},
	}}
}

// migratable returns the instance's running active VMM, or why it cannot
// migrate now.
func (d Deps) migratable(ctx context.Context, p InstanceMigrateParams) (datastore.Instance, datastore.VMM, error) {
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if err != nil {
		return inst, datastore.VMM{}, err
	}
	if inst.Runtime.State != datastore.InstanceVMM || inst.Runtime.ActiveVMM == nil {
		return inst, datastore.VMM{}, fmt.Errorf("%w: only a running instance can migrate; it has no VMM", ErrInstanceBusy)
	}
	if inst.Runtime.MigrationID != nil {
		return inst, datastore.VMM{}, fmt.Errorf("%w: it is already migrating", ErrInstanceBusy)
	}
	source, err := d.DS.VMMGet(ctx, *inst.Runtime.ActiveVMM)
	if err != nil {
		return inst, source, err
	}
	if source.Runtime.State != datastore.VMMRunning {
		return inst, source, fmt.Errorf("%w: only a running instance can migrate; its VMM is %s", ErrInstanceBusy, source.Runtime.State)
	}
	if source.SledID == p.DstSled {
		return inst, source, fmt.Errorf("%w: the instance already runs on sled %s", ErrSameSled, p.DstSled)
	}
	return inst, source, nil
}

func (d Deps) allocTarget(ctx context.Context, sc *saga.Context) (any, error) {
	var p InstanceMigrateParams
	if err := sc.Params(&p); err != nil {
		return nil, err
	}
	inst, source, err := d.migratable(ctx, p)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	err = d.DS.VMMAllocateOn(ctx, datastore.VMM{ID: p.TargetVMM, InstanceID: inst.ID, SledID: p.DstSled, TimeCreated: now,
		Runtime: datastore.VMMRuntime{State: datastore.VMMCreating, Generation: 1, TimeUpdated: now}},
		inst.NCPUs, inst.MemoryBytes, now.Add(-d.SledLiveness))
	if err != nil {
		return nil, err
	}
	return migrationSource{VMM: source.ID, Sled: source.SledID}, nil
}

func (d Deps) unwindTarget(ctx context.Context, sc *saga.Context) error {
	var p InstanceMigrateParams
	if err := sc.Params(&p); err != nil {
		return err
	}
	return d.markUnwound(ctx, p.TargetVMM)
}

func (d Deps) createMigration(ctx context.Context, sc *saga.Context) (any, error) {
	var (
		p   InstanceMigrateParams
		src migrationSource
	)
	if err := sc.Params(&p); err != nil {
		return nil, err
	}
	if err := sc.Output("alloc_target", &src); err != nil {
		return nil, err
	}
	return nil, d.DS.MigrationInsert(ctx, datastore.Migration{ID: p.Migration, InstanceID: p.Instance,
		SourceVMM: src.VMM, TargetVMM: p.TargetVMM, TimeCreated: time.Now()})
}

func (d Deps) setMigrationIDs(ctx context.Context, sc *saga.Context) (any, error) {
	var (
		p   InstanceMigrateParams
		src migrationSource
	)
	if err := sc.Params(&p); err != nil {
		return nil, err
	}
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
	if rt.State != datastore.InstanceVMM || rt.ActiveVMM == nil || *rt.ActiveVMM != src.VMM || rt.MigrationID != nil {
		return nil, fmt.Errorf("%w: it changed while the migration was being prepared", ErrInstanceBusy)
	}
	target, migration := p.TargetVMM, p.Migration
	next := rt
	next.TargetVMM, next.MigrationID = &target, &migration
	next.Generation, next.TimeUpdated = rt.Generation+1, time.Now()
	wrote, err := d.DS.InstanceUpdateRuntime(ctx, inst.ID, next)
	if err != nil {
		return nil, err
	}
	if !wrote {
		return nil, fmt.Errorf("%w: it changed while the migration was being prepared", ErrInstanceBusy)
	}
	return nil, nil
}

// clearMigrationIDs points the instance away from the migration, if it
// still points at it; a force-terminate or an update saga may have done so.
func (d Deps) clearMigrationIDs(ctx context.Context, sc *saga.Context) error {
	var p InstanceMigrateParams
	if err := sc.Params(&p); err != nil {
		return err
	}
	for attempt := 0; attempt < casRetries; attempt++ {
		inst, err := d.DS.InstanceGet(ctx, p.Instance)
		if err != nil {
			return err
		}
		rt := inst.Runtime
		if rt.MigrationID == nil || *rt.MigrationID != p.Migration {
			return nil
		}
		next := rt
		next.TargetVMM, next.MigrationID = nil, nil
		next.Generation, next.TimeUpdated = rt.Generation+1, time.Now()
		wrote, err := d.DS.InstanceUpdateRuntime(ctx, inst.ID, next)
		if err != nil || wrote {
			return err
		}
	}
	return fmt.Errorf("instance %s kept changing while its migration ids were cleared", p.Instance)
}

func (d Deps) targetClient(ctx context.Context, p InstanceMigrateParams) (sledagentv1.SledAgentClient, error) {
	return d.Sleds.Client(ctx, p.DstSled)
}

func (d Deps) ensureTargetRegistered(ctx context.Context, sc *saga.Context) (any, error) {
	var (
		p   InstanceMigrateParams
		src migrationSource
	)
	if err := sc.Params(&p); err != nil {
		return nil, err
	}
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
	client, err := d.targetClient(ctx, p)
	if err != nil {
		return nil, err
	}
	return nil, d.register(ctx, client, p.DstSled, p.TargetVMM, &sledagentv1.EnsureRegisteredRequest{
		VmmId:          p.TargetVMM.String(),
		InstanceId:     p.Instance.String(),
		Spec:           &sledagentv1.VmmSpec{Ncpus: int32(inst.NCPUs), MemoryBytes: inst.MemoryBytes, Hostname: inst.Hostname},
		InitialRuntime: &sledagentv1.VmmRuntime{Generation: 1},
		MigrationTarget: &sledagentv1.MigrationTargetParams{MigrationId: p.Migration.String(),
			SourceVmmId: src.VMM.String(), SourceSledAddress: sourceAddress},
	})
}

func (d Deps) ensureTargetUnregistered(ctx context.Context, sc *saga.Context) error {
	var p InstanceMigrateParams
	if err := sc.Params(&p); err != nil {
		return err
	}
	client, err := d.targetClient(ctx, p)
	if err != nil {
		return err
	}
	resp, err := client.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: p.TargetVMM.String()})
	if err != nil {
		return sledclient.Classify(p.DstSled, err)
	}
	return d.writeRuntime(ctx, p.TargetVMM, resp.GetUpdatedRuntime())
}

func (d Deps) ensureTargetMigrating(ctx context.Context, sc *saga.Context) (any, error) {
	var p InstanceMigrateParams
	if err := sc.Params(&p); err != nil {
		return nil, err
	}
	client, err := d.targetClient(ctx, p)
	if err != nil {
		return nil, err
	}
	resp, err := client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: p.TargetVMM.String(),
		Target: sledagentv1.VmmTargetState_VMM_TARGET_STATE_MIGRATION_TARGET})
	if err != nil {
		return nil, sledclient.Classify(p.DstSled, err)
	}
	return nil, d.writeRuntime(ctx, p.TargetVMM, resp.GetRuntime())
}
