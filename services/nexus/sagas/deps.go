package sagas

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

// SledAgents reaches the sled-agent of a sled.
type SledAgents interface {
	Client(ctx context.Context, sled uuid.UUID) (sledagentv1.SledAgentClient, error)
}

// Deps is what the sagas need from nexus.
type Deps struct {
	DS    *datastore.DataStore
	Sleds SledAgents
	// SledLiveness is how recently a sled must have been seen to receive a
	// new VMM.
	SledLiveness time.Duration
}

// Template names.
const (
	InstanceStart   = "instance-start"
	InstanceUpdate  = "instance-update"
	InstanceDelete  = "instance-delete"
	InstanceMigrate = "instance-migrate"
)

// Templates returns every saga template, for the engine to register.
func Templates(d Deps) []saga.Template {
	return []saga.Template{instanceStart(d), instanceUpdate(d), instanceDelete(d), instanceMigrate(d)}
}

var (
	// ErrInstanceBusy means the instance is not in a state the saga can act
	// from (it is already starting, running, or changed meanwhile).
	ErrInstanceBusy = errors.New("instance is busy")
	// ErrInstanceNotStopped means the operation needs a stopped or failed
	// instance.
	ErrInstanceNotStopped = errors.New("instance is not stopped")
	// ErrUpdaterLockHeld means another update holds the instance's
	// updater lock; it (or the background updater) will do the work.
	ErrUpdaterLockHeld = errors.New("instance updater lock is held by another update")
	// ErrSameSled means a migration was asked to move an instance to the
	// sled it already runs on.
	ErrSameSled = errors.New("the destination is the instance's own sled")
)

// casRetries bounds read-modify-write loops that lose a generation race.
const casRetries = 8
