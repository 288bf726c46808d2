package model

import (
	"time"

	"github.com/google/uuid"
)

// Sled is a server known to nexus.
type Sled struct {
	ID           uuid.UUID
	Address      string
	NCPUs        int64
	MemoryBytes  int64
	Zpools       []string
	TimeCreated  time.Time
	TimeModified time.Time
	TimeLastSeen time.Time
}
