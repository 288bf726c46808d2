package model

import (
	"fmt"
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

// NexusZone is a nexus replica (X2): rack setup makes each a zone of a
// sled, whose id is the replica's; a replica started by hand outside rack
// setup records itself on no sled (SledID nil).
type NexusZone struct {
	ID              uuid.UUID
	SledID          uuid.UUID
	InternalAddress string
	ExternalAddress string
	State           NexusZoneState
	TimeCreated     time.Time
	TimeExpunged    time.Time
	// ZoneConfirmedGone is when its zone's sled proved the zone gone (Z9);
	// zero until then.
	ZoneConfirmedGone time.Time
	// SagasReassigned counts the unfinished sagas moved from it to
	// ReassignedTo, the last time at TimeReassigned (X4).
	SagasReassigned int64
	ReassignedTo    uuid.UUID
	TimeReassigned  time.Time
}

// ReplicaClaims is what a replica holds: its unfinished and stuck sagas,
// and the updater locks its sagas hold.
type ReplicaClaims struct {
	Running, Unwinding, Stuck int64
	UpdaterLocks              int64
}

// ZoneDisposition is whether nexus wants a zone to run.
type ZoneDisposition string

const (
	ZoneInService ZoneDisposition = "in_service"
	// ZoneExpunged is a zone nexus took out of its sled's config for good.
	ZoneExpunged ZoneDisposition = "expunged"
)

// ZoneRecord is a zone nexus put on a sled, and where it stands.
type ZoneRecord struct {
	Zone
	SledID      uuid.UUID
	Disposition ZoneDisposition
	// ExpungedGeneration is the generation of the sled's config that left
	// it out; 0 while in service.
	ExpungedGeneration uint64
	TimeCreated        time.Time
	TimeExpunged       time.Time
	// TimeConfirmedGone is when an inventory first proved it gone (Z9);
	// zero until then.
	TimeConfirmedGone time.Time
}

// ConfirmedGone reports whether the zone is expunged and its sled proved it
// gone.
func (z ZoneRecord) ConfirmedGone() bool { return !z.TimeConfirmedGone.IsZero() }

// ZonesPush is the outcome of the last push of a sled's zones config.
type ZonesPush struct {
	// Generation is the last one the sled took; 0 before any.
	Generation uint64
	Time       time.Time
	// Error is the last push's failure; empty once one succeeds.
	Error string
}

// Reconciler phases as a sled's inventory reports them.
const (
	ReconcilerNotYetRun = "not_yet_run"
	ReconcilerRunning   = "running"
	ReconcilerIdle      = "idle"
)

// SledInventory is what a sled said of itself when nexus last asked
// (GetInventory, Z6), as nexus keeps it (Z9).
type SledInventory struct {
	SledID        uuid.UUID
	TimeCollected time.Time
	// LedgeredGeneration is the config the sled ledgers; 0 for none.
	LedgeredGeneration uint64
	// ReconciledGeneration is the config its last completed pass drove
	// it toward; 0 before any pass.
	ReconciledGeneration uint64
	Reconciler           string
	// Zones are the zones still present after that pass: a zone absent
	// from them is not running.
	Zones []InventoryZone
	VMMs  []InventoryVMM
	// Zpools are the sled's pools. Rack setup checks a plan against them;
	// nexus does not keep them with the inventory (the sled registered
	// them).
	Zpools []string
}

// InventoryZone is a zone present on a sled after its last pass.
type InventoryZone struct {
	ID   uuid.UUID `json:"id"`
	Kind ZoneKind  `json:"kind"`
	// Error is empty for a zone running as configured; otherwise State
	// says where it is stuck and Attempts how often it was tried.
	Error    string `json:"error,omitempty"`
	State    string `json:"state,omitempty"`
	Attempts uint32 `json:"attempts,omitempty"`
}

// InventoryVMM is a VMM registered on a sled.
type InventoryVMM struct {
	ID         uuid.UUID `json:"id"`
	InstanceID uuid.UUID `json:"instance_id"`
	State      VMMState  `json:"state"`
	Generation uint64    `json:"generation"`
	// The rest of its runtime, for the instance watcher (absent from
	// inventories stored before it was recorded).
	TimeUpdated   time.Time `json:"time_updated,omitzero"`
	FailureReason string    `json:"failure_reason,omitempty"`
}

// Runtime is the VMM's runtime as its sled reported it.
func (v InventoryVMM) Runtime() VMMRuntime {
	return VMMRuntime{State: v.State, Generation: v.Generation, TimeUpdated: v.TimeUpdated, FailureReason: v.FailureReason}
}

// Zone returns the inventory's entry for a zone, if present.
func (inv SledInventory) Zone(id uuid.UUID) (InventoryZone, bool) {
	for _, z := range inv.Zones {
		if z.ID == id {
			return z, true
		}
	}
	return InventoryZone{}, false
}

// ProvesGone reports whether this inventory proves a zone that generation
// expungedAt left out gone (Z9): the sled's last completed reconciliation
// reached that generation and the zone is not present after it. Nothing
// else proves it: not a timeout, not an unreachable sled.
func (inv SledInventory) ProvesGone(zone uuid.UUID, expungedAt uint64) bool {
	if expungedAt == 0 || inv.ReconciledGeneration < expungedAt {
		return false
	}
	_, present := inv.Zone(zone)
	return !present
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

// WaitingFor says, for an expunged zone not yet confirmed gone, what its
// confirmation waits for, from its sled's last inventory (nil for none)
// and last push: what an operator needs to see why its replica's sagas
// have not moved (X4). It is empty for a zone in service or confirmed.
func (z ZoneRecord) WaitingFor(inv *SledInventory, push ZonesPush) string {
	if z.Disposition != ZoneExpunged || z.ConfirmedGone() {
		return ""
	}
	pushNote := ""
	if push.Generation < z.ExpungedGeneration && push.Error != "" {
		pushNote = fmt.Sprintf("; the sled has not taken generation %d yet (last push: %s)", z.ExpungedGeneration, push.Error)
	}
	switch {
	case inv == nil:
		return fmt.Sprintf("no inventory collected from sled %s yet%s", z.SledID, pushNote)
	case inv.ReconciledGeneration < z.ExpungedGeneration:
		return fmt.Sprintf("sled %s's last reconciliation (inventory at %s) reached generation %d; the expunge is generation %d%s",
			z.SledID, inv.TimeCollected.Format(time.RFC3339), inv.ReconciledGeneration, z.ExpungedGeneration, pushNote)
	}
	if present, ok := inv.Zone(z.ID); ok {
		what := "running"
		if present.Error != "" {
			what = fmt.Sprintf("%s after %d attempts: %s", present.State, present.Attempts, present.Error)
		}
		return fmt.Sprintf("sled %s's inventory at %s still lists the zone: %s", z.SledID, inv.TimeCollected.Format(time.RFC3339), what)
	}
	return "the next inventory of sled " + z.SledID.String()
}
