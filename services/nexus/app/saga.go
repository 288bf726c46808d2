package app

import (
	"context"
	"errors"

	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

// SagaListStuck lists the sagas whose undo kept failing, whichever nexus
// owns them, oldest first, with the node and error each is stuck on (SPEC
// N5: a stuck saga is reported). Fleet admins only.
func (n *Nexus) SagaListStuck(ctx context.Context) ([]saga.StuckSaga, error) {
	if err := authz.RequireFleetAdmin(ctx, "list stuck sagas"); err != nil {
		return nil, err
	}
	if n.sagas == nil {
		return nil, errors.New("this nexus runs no saga engine")
	}
	return n.sagas.Stuck(ctx)
}
