package sagas

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

// instanceCreate creates an instance and starts it as one saga (N7, SPEC
// 7), as omicron's instance-create saga does: the record is inserted
// `creating`, then the start saga's nodes run, and a create that cannot
// start (no sled has room, its sled does not answer) unwinds to nothing, so
// that a retry of the same request is not refused because the name is
// taken. Its params are InstanceStartParams with Create set.
func instanceCreate(d Deps) saga.Template {
	start := instanceStart(d)
	return saga.Template{Name: InstanceCreate, Nodes: append([]saga.Node{
		{Name: "create_instance", Action: saga.ActionWith(d.createInstance), Undo: saga.UndoWith(d.uncreateInstance)},
	}, start.Nodes...)}
}

func (d Deps) createInstance(ctx context.Context, _ *saga.Context, p InstanceStartParams) (any, error) {
	if p.Create == nil || p.Create.ID != p.Instance || p.Create.Runtime.State != model.InstanceCreating {
		return nil, fmt.Errorf("%s saga for instance %s without its creating record", InstanceCreate, p.Instance)
	}
	err := d.DS.InstanceCreate(ctx, *p.Create)
	if err != nil {
		// Created before a crash, or committed although its answer was
		// lost: a failed node has no undo, so the row would stay
		// `creating` for good.
		if _, getErr := d.DS.InstanceGet(ctx, p.Instance); getErr == nil {
			return nil, nil
		}
	}
	return nil, err
}

// uncreateInstance deletes the instance the saga created, once the start
// nodes' undos have put it back to what it was created as. An instance
// that another request has since taken over is that request's, and is
// left as it is: one whose VMM another start runs, or one a stop or
// force-terminate has answered for (its wish is no longer the create's),
// which is moved from `creating` to stopped.
func (d Deps) uncreateInstance(ctx context.Context, _ *saga.Context, p InstanceStartParams) error {
	for range uncreateTries {
		inst, err := d.DS.InstanceGet(ctx, p.Instance)
		if errors.Is(err, model.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		s := inst.Runtime.State
		if s == model.InstanceCreating && inst.IntendedState != p.Create.IntendedState {
			// A stop answered for it while it was created: it stays, and
			// the start nodes' undos left no VMM, so it rests stopped
			// rather than `creating` for good.
			next := inst.Runtime.Next(time.Now())
			next.State = model.InstanceNoVMM
			wrote, err := d.DS.InstanceUpdateRuntime(ctx, inst.ID, next)
			if err != nil || wrote {
				return err
			}
			continue
		}
		if (s != model.InstanceCreating && s != model.InstanceNoVMM && s != model.InstanceFailed) ||
			inst.IntendedState != p.Create.IntendedState {
			if d.Log != nil {
				d.Log.Warn("a create that failed leaves its instance, which another request has taken over",
					zap.Stringer("instance_id", inst.ID), zap.String("state", string(s)),
					zap.String("intended_state", string(inst.IntendedState)))
			}
			return nil
		}
		wrote, err := d.DS.InstanceDelete(ctx, inst.ID, inst.Runtime.Generation, time.Now())
		if err != nil || wrote {
			return err
		}
	}
	return fmt.Errorf("%w: instance %s kept changing while its failed create deleted it", model.ErrInstanceBusy, p.Instance)
}

// uncreateTries bounds how often uncreateInstance reads the instance
// again when it changed between its read and its delete.
const uncreateTries = 5
