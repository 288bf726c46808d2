package sagas

import (
	"context"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sledclient"
)

// SledAgents is what the sagas ask of sled-agents; sledclient.Pool
// answers it.
type SledAgents interface {
	EnsureRegistered(ctx context.Context, sled uuid.UUID, r sledclient.Registration) (model.VMMRuntime, error)
	EnsureState(ctx context.Context, sled, vmm uuid.UUID, target model.VMMTarget) (model.VMMRuntime, error)
	EnsureUnregistered(ctx context.Context, sled, vmm uuid.UUID) (*model.VMMRuntime, error)
	VMMState(ctx context.Context, sled, vmm uuid.UUID) (model.VMMRuntime, error)
}

// Deps is what the sagas need from nexus.
type Deps struct {
	DS    *datastore.DataStore
	Sleds SledAgents
	// Replica is the nexus that runs the sagas: what they claim (an
	// updater lock) is claimed as it (X3).
	Replica uuid.UUID
	// SledLiveness is how recently a sled must have been seen to receive a
	// new VMM.
	SledLiveness time.Duration
	// Log is for what a node cannot report through its saga (an undo of
	// its own that failed); nil logs nothing.
	Log *zap.Logger
}

// Template names.
const (
	InstanceCreate  = "instance-create"
	InstanceStart   = "instance-start"
	InstanceUpdate  = "instance-update"
	InstanceDelete  = "instance-delete"
	InstanceMigrate = "instance-migrate"
)

// Templates returns every saga template, for the engine to register.
func Templates(d Deps) []saga.Template {
	return []saga.Template{instanceCreate(d), instanceStart(d), instanceUpdate(d), instanceDelete(d), instanceMigrate(d)}
}
