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

// SledReachability is whether a sled answers nexus (SPEC 6). Unreachable
// is no verdict on what it runs (F7, N8): its VMMs keep their states, and
// it only gets no new VMM until it answers again.
type SledReachability string

const (
	SledReachable   SledReachability = "reachable"
	SledUnreachable SledReachability = "unreachable"
)

// Reachability is the sled's at now: unreachable once it has gone longer
// than timeout without a heartbeat.
func (s Sled) Reachability(now time.Time, timeout time.Duration) SledReachability {
	return ReachabilitySince(s.TimeLastSeen, now, timeout)
}

// ReachabilitySince is the reachability of a sled last seen at lastSeen.
func ReachabilitySince(lastSeen, now time.Time, timeout time.Duration) SledReachability {
	if now.Sub(lastSeen) > timeout {
		return SledUnreachable
	}
	return SledReachable
}
