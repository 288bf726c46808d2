package app

import (
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/datastore"
)

// Nexus is the application layer of one nexus replica.
type Nexus struct {
	log *zap.Logger
	ds  *datastore.DataStore
}

// New returns the application layer over ds.
func New(ds *datastore.DataStore, log *zap.Logger) *Nexus {
	return &Nexus{log: log, ds: ds}
}
