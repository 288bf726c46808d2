package model

import (
	"time"

	"github.com/google/uuid"
)

// ZoneKind is a kind of service zone, spelt as operators say it ("nexus",
// "internal_ntp").
type ZoneKind string

// ZoneNexus is the kind of a nexus replica's zone (X2).
const ZoneNexus ZoneKind = "nexus"

// Zone is one service zone a sled should run.
type Zone struct {
	ID   uuid.UUID `json:"id"`
	Kind ZoneKind  `json:"kind"`
	// Pool is the zpool holding the zone's filesystem.
	Pool string `json:"pool"`
	// Address is the zone's socket address; a nexus zone's internal API.
	Address string `json:"address"`
	// Nexus is set for a nexus zone.
	Nexus *NexusZoneDetails `json:"nexus,omitempty"`
}

// NexusZoneDetails is what a nexus zone runs with besides its address.
type NexusZoneDetails struct {
	ExternalAddress string `json:"external_address"`
	MetricsAddress  string `json:"metrics_address"`
	DatabaseBackend string `json:"database_backend"`
	DatabaseURL     string `json:"database_url"`
}

// SledZones is the zones config nexus wants a sled to run (Z9): the sled
// ledgers it and reconciles toward it, and refuses an older generation.
type SledZones struct {
	SledID       uuid.UUID
	Generation   uint64
	Zones        []Zone
	TimeModified time.Time
}

// NexusZoneState is where a nexus replica stands (X2).
type NexusZoneState string

const (
	NexusActive   NexusZoneState = "active"
	NexusExpunged NexusZoneState = "expunged"
)

// NexusZone is a nexus replica as a zone of a sled (X2): its zone id is the
// replica's id.
type NexusZone struct {
	ID              uuid.UUID
	SledID          uuid.UUID
	InternalAddress string
	ExternalAddress string
	State           NexusZoneState
	TimeCreated     time.Time
}

// RackPlan is what rack setup starts a rack from (Z11): each sled's first
// zones config. Its nexus zones become the replicas.
type RackPlan struct {
	Sleds []SledZones
}

// NexusZones are the plan's nexus zones as replicas.
func (p RackPlan) NexusZones(at time.Time) []NexusZone {
	var out []NexusZone
	for _, s := range p.Sleds {
		for _, z := range s.Zones {
			if z.Kind == ZoneNexus && z.Nexus != nil {
				out = append(out, NexusZone{ID: z.ID, SledID: s.SledID, InternalAddress: z.Address,
					ExternalAddress: z.Nexus.ExternalAddress, State: NexusActive, TimeCreated: at})
			}
		}
	}
	return out
}
