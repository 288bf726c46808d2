package app

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/model"
)

// replica is this nexus as a replica of the rack (X2, X3).
type replica struct {
	id uuid.UUID
	// expunged closes once this replica knows it was expunged: from then
	// on it serves nothing and stops.
	expunged chan struct{}
	once     sync.Once
}

// ReplicaID is this replica's id.
func (n *Nexus) ReplicaID() uuid.UUID { return n.replica.id }

// Expunged closes once this replica has noticed it was expunged.
func (n *Nexus) Expunged() <-chan struct{} { return n.replica.expunged }

// IsExpunged reports whether this replica has noticed it was expunged.
func (n *Nexus) IsExpunged() bool {
	select {
	case <-n.replica.expunged:
		return true
	default:
		return false
	}
}

// RegisterReplica records this replica as it starts (rack setup recorded
// it already if it is a zone; one started by hand records itself on no
// sled). An expunged replica never serves again: its start fails.
func (n *Nexus) RegisterReplica(ctx context.Context, internal, external string) error {
	rec, err := n.ds.NexusRegister(ctx, model.NexusZone{ID: n.replica.id, InternalAddress: internal,
		ExternalAddress: external, State: model.NexusActive, TimeCreated: time.Now()})
	if err != nil {
		return fmt.Errorf("recording nexus replica %s: %w", n.replica.id, err)
	}
	if rec.State != model.NexusActive {
		return fmt.Errorf("%w: nexus %s was expunged at %s; an expunged replica never serves again",
			model.ErrReplicaNotActive, n.replica.id, rec.TimeExpunged.Format("2006-01-02T15:04:05Z07:00"))
	}
	return nil
}

// CheckReplica reads this replica's state; once it is expunged, Expunged
// closes (X3: it stops serving, and its process exits).
func (n *Nexus) CheckReplica(ctx context.Context) (replicas int, err error) {
	rec, err := n.ds.NexusZoneGet(ctx, n.replica.id)
	if err != nil {
		return 0, err
	}
	if rec.State == model.NexusExpunged {
		n.replica.once.Do(func() {
			n.log.Warn("this nexus replica has been expunged: it serves nothing from now on and stops",
				zap.Stringer("nexus_id", n.replica.id), zap.Time("time_expunged", rec.TimeExpunged))
			close(n.replica.expunged)
		})
	}
	return 1, nil
}
