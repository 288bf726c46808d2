package app

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

// StuckSagaView is a stuck saga with its owner's state.
type StuckSagaView struct {
	saga.StuckSaga
	OwnerState model.NexusZoneState
}

// SagaListStuck lists the sagas whose undo kept failing, whichever nexus
// owns them, oldest first, with the node and error each is stuck on (SPEC
// N5: a stuck saga is reported) and its owner's state (X6). Fleet admins
// only.
func (n *Nexus) SagaListStuck(ctx context.Context) ([]StuckSagaView, error) {
	if err := authz.RequireFleetAdmin(ctx, "list stuck sagas"); err != nil {
		return nil, err
	}
	if n.sagas == nil {
		return nil, errors.New("this nexus runs no saga engine")
	}
	stuck, err := n.sagas.Stuck(ctx)
	if err != nil {
		return nil, err
	}
	states, err := n.replicaStates(ctx)
	out := make([]StuckSagaView, len(stuck))
	for i, s := range stuck {
		out[i] = StuckSagaView{StuckSaga: s, OwnerState: states[s.Owner]}
	}
	return out, err
}

// SagaList lists every unfinished and stuck saga with its owner's state
// (X6: per instance, which replica's saga holds it). Fleet admins only.
func (n *Nexus) SagaList(ctx context.Context) ([]datastore.OwnedSaga, error) {
	if err := authz.RequireFleetAdmin(ctx, "list sagas"); err != nil {
		return nil, err
	}
	return n.ds.SagaListOpen(ctx)
}

// UpdaterLockList lists the held updater locks, by which saga of which
// replica (X6). Fleet admins only.
func (n *Nexus) UpdaterLockList(ctx context.Context) ([]datastore.UpdaterLock, error) {
	if err := authz.RequireFleetAdmin(ctx, "list updater locks"); err != nil {
		return nil, err
	}
	return n.ds.UpdaterLockList(ctx)
}

// replicaStates maps each recorded replica to its state, for views that
// name a saga's owner.
func (n *Nexus) replicaStates(ctx context.Context) (map[uuid.UUID]model.NexusZoneState, error) {
	replicas, err := n.ds.NexusZoneList(ctx)
	out := make(map[uuid.UUID]model.NexusZoneState, len(replicas))
	for _, r := range replicas {
		out[r.ID] = r.State
	}
	return out, err
}
