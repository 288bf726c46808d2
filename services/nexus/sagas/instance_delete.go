package sagas

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

// InstanceDeleteParams name the instance to delete.
type InstanceDeleteParams struct {
	Instance uuid.UUID `json:"instance"`
}

// instanceDelete: a stopped or failed instance becomes destroyed and
// deleted, through the generation guard, so a start racing the delete
// makes one of them fail rather than leave a running, deleted instance.
func instanceDelete(d Deps) saga.Template {
	return saga.Template{Name: InstanceDelete, Nodes: []saga.Node{
		{Name: "destroy", Action: saga.ActionWith(d.destroyInstance)},
	}}
}

func (d Deps) destroyInstance(ctx context.Context, _ *saga.Context, p InstanceDeleteParams) (any, error) {
	inst, err := d.DS.InstanceGet(ctx, p.Instance)
	if errors.Is(err, model.ErrNotFound) {
		return nil, nil // deleted before a crash
	}
	if err != nil {
		return nil, err
	}
	if s := inst.Runtime.State; s != model.InstanceNoVMM && s != model.InstanceFailed {
		return nil, fmt.Errorf("%w: it is %s; stop it first", model.ErrInstanceNotStopped, s)
	}
	wrote, err := d.DS.InstanceDelete(ctx, inst.ID, inst.Runtime.Generation, time.Now())
	if err == nil && !wrote {
		err = fmt.Errorf("%w: it changed while being deleted", model.ErrInstanceBusy)
	}
	return nil, err
}
