package sagas

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
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
		{Name: "destroy", Action: func(ctx context.Context, sc *saga.Context) (any, error) {
			var p InstanceDeleteParams
			if err := sc.Params(&p); err != nil {
				return nil, err
			}
			inst, err := d.DS.InstanceGet(ctx, p.Instance)
			if errors.Is(err, datastore.ErrNotFound) {
				return nil, nil // deleted before a crash
			}
			if err != nil {
				return nil, err
			}
			if s := inst.Runtime.State; s != datastore.InstanceNoVMM && s != datastore.InstanceFailed {
				return nil, fmt.Errorf("%w: it is %s; stop it first", ErrInstanceNotStopped, s)
			}
			wrote, err := d.DS.InstanceDelete(ctx, inst.ID, inst.Runtime.Generation, time.Now())
			if err == nil && !wrote {
				err = fmt.Errorf("%w: it changed while being deleted", ErrInstanceBusy)
			}
			return nil, err
		}},
	}}
}
