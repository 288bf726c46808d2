package model

import (
	"slices"
	"strings"
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

// Sorted returns the plan with its sleds and each sled's zones in id
// order, as it is recorded and compared.
func (p RackPlan) Sorted() RackPlan {
	out := RackPlan{Sleds: slices.Clone(p.Sleds)}
	for i := range out.Sleds {
		out.Sleds[i].Zones = slices.Clone(out.Sleds[i].Zones)
		slices.SortFunc(out.Sleds[i].Zones, func(a, b Zone) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	}
	slices.SortFunc(out.Sleds, func(a, b SledZones) int { return strings.Compare(a.SledID.String(), b.SledID.String()) })
	return out
}

// Diff says how other differs from p, in a few words; empty when they are
// the same plan.
func (p RackPlan) Diff(other RackPlan) string {
	mine, theirs := p.Sorted(), other.Sorted()
	sleds := func(r RackPlan) map[uuid.UUID]SledZones {
		m := map[uuid.UUID]SledZones{}
		for _, s := range r.Sleds {
			m[s.SledID] = s
		}
		return m
	}
	a, b := sleds(mine), sleds(theirs)
	var diffs []string
	for _, s := range mine.Sleds {
		t, ok := b[s.SledID]
		switch {
		case !ok:
			diffs = append(diffs, "sled "+s.SledID.String()+" is not in the new plan")
		case !slices.EqualFunc(s.Zones, t.Zones, func(x, y Zone) bool { return x.equal(y) }):
			diffs = append(diffs, "sled "+s.SledID.String()+"'s zones differ")
		}
	}
	for _, t := range theirs.Sleds {
		if _, ok := a[t.SledID]; !ok {
			diffs = append(diffs, "sled "+t.SledID.String()+" is new")
		}
	}
	return strings.Join(diffs, "; ")
}

func (z Zone) equal(o Zone) bool {
	if z.ID != o.ID || z.Kind != o.Kind || z.Pool != o.Pool || z.Address != o.Address || (z.Nexus == nil) != (o.Nexus == nil) {
		return false
	}
	return z.Nexus == nil || *z.Nexus == *o.Nexus
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
