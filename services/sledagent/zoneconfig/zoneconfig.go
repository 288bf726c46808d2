package zoneconfig

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
)

// Kind is a zone kind in its lowercase wire-independent spelling, e.g.
// "nexus". It is what the ledger stores.
type Kind string

var kindsByProto = map[sledagentv1.ZoneKind]Kind{
	sledagentv1.ZoneKind_ZONE_KIND_BOUNDARY_NTP:      "boundary_ntp",
	sledagentv1.ZoneKind_ZONE_KIND_INTERNAL_NTP:      "internal_ntp",
	sledagentv1.ZoneKind_ZONE_KIND_CLICKHOUSE:        "clickhouse",
	sledagentv1.ZoneKind_ZONE_KIND_CLICKHOUSE_KEEPER: "clickhouse_keeper",
	sledagentv1.ZoneKind_ZONE_KIND_COCKROACH_DB:      "cockroach_db",
	sledagentv1.ZoneKind_ZONE_KIND_CRUCIBLE:          "crucible",
	sledagentv1.ZoneKind_ZONE_KIND_CRUCIBLE_PANTRY:   "crucible_pantry",
	sledagentv1.ZoneKind_ZONE_KIND_EXTERNAL_DNS:      "external_dns",
	sledagentv1.ZoneKind_ZONE_KIND_INTERNAL_DNS:      "internal_dns",
	sledagentv1.ZoneKind_ZONE_KIND_NEXUS:             "nexus",
	sledagentv1.ZoneKind_ZONE_KIND_OXIMETER:          "oximeter",
}

// IsNTP reports whether the kind keeps the sled's time; a sled runs at most
// one such zone.
func (k Kind) IsNTP() bool { return k == "boundary_ntp" || k == "internal_ntp" }

// Proto returns the wire enum for k.
func (k Kind) Proto() sledagentv1.ZoneKind {
	for p, kind := range kindsByProto {
		if kind == k {
			return p
		}
	}
	return sledagentv1.ZoneKind_ZONE_KIND_UNSPECIFIED
}

// KindNexus is the kind of a nexus replica's zone.
const KindNexus Kind = "nexus"

// Zone is one zone a sled should run.
type Zone struct {
	ID             uuid.UUID      `json:"id"`
	Kind           Kind           `json:"kind"`
	FilesystemPool string         `json:"filesystem_pool"`
	Address        netip.AddrPort `json:"address"`
	// Nexus is set for a nexus zone, whose Address is its internal API.
	Nexus NexusZone `json:"nexus,omitzero"`
}

// NexusZone is what a nexus zone runs with besides its internal address.
type NexusZone struct {
	ExternalAddress netip.AddrPort `json:"external_address"`
	MetricsAddress  netip.AddrPort `json:"metrics_address"`
	DatabaseBackend string         `json:"database_backend"`
	DatabaseURL     string         `json:"database_url"`
}

// Config is a validated, canonical zones config.
type Config struct {
	Generation uint64 `json:"generation"`
	Zones      []Zone `json:"zones"` // sorted by ID
}

// Sled is what validation needs to know about the sled the config is for.
type Sled struct {
	Zpools []string
}

// Parse validates a wire config for this sled. On failure it returns a
// *apierror.ValidationError listing every problem; field paths are relative
// to the request ("config.zones[1].id").
func Parse(in *sledagentv1.OmicronZonesConfig, sled Sled) (Config, error) {
	var v apierror.Violations
	if in == nil {
		v.Add("config", "is required")
		return Config{}, v.Err()
	}
	if in.GetGeneration() == 0 {
		v.Add("config.generation", "must be at least 1")
	}
	out := Config{Generation: in.GetGeneration(), Zones: make([]Zone, 0, len(in.GetZones()))}
	idFirstSeen := map[uuid.UUID]int{}
	addrFirstSeen := map[netip.AddrPort]int{}
	ntpFirstSeen := -1
	for i, z := range in.GetZones() {
		field := fmt.Sprintf("config.zones[%d]", i)
		zone := Zone{FilesystemPool: z.GetFilesystemPool()}
		valid := true

		before := v.Len()
		id := v.UUID(field+".id", z.GetId())
		switch {
		case v.Len() > before:
			valid = false
		default:
			zone.ID = id
			if first, dup := idFirstSeen[id]; dup {
				v.Add(field+".id", "%s is also the id of config.zones[%d]", id, first)
				valid = false
			} else {
				idFirstSeen[id] = i
			}
		}

		kind, known := kindsByProto[z.GetKind()]
		if !known {
			v.Add(field+".kind", "unknown zone kind %s", describeKind(z.GetKind()))
			valid = false
		} else {
			zone.Kind = kind
			if kind.IsNTP() {
				if ntpFirstSeen >= 0 {
					v.Add(field+".kind", "a sled runs at most one NTP zone; config.zones[%d] is already one", ntpFirstSeen)
					valid = false
				} else {
					ntpFirstSeen = i
				}
			}
		}

		switch {
		case z.GetFilesystemPool() == "":
			v.Add(field+".filesystem_pool", "is required")
			valid = false
		case !slices.Contains(sled.Zpools, z.GetFilesystemPool()):
			v.Add(field+".filesystem_pool", "%q is not a zpool of this sled (it has %s)",
				z.GetFilesystemPool(), strings.Join(sled.Zpools, ", "))
			valid = false
		}

		// claim records an address of this zone, refusing one another zone
		// (or this one) already has.
		claim := func(name string, addr netip.AddrPort) {
			if first, dup := addrFirstSeen[addr]; dup {
				v.Add(field+"."+name, "%s is also an address of config.zones[%d]", addr, first)
				valid = false
				return
			}
			addrFirstSeen[addr] = i
		}
		if addr, ok := parseAddress(&v, field+".address", z.GetAddress(), false); ok {
			zone.Address = addr
			claim("address", addr)
		} else {
			valid = false
		}
		if known && !validNexus(&v, field, kind, z.GetNexus(), &zone, claim) {
			valid = false
		}
		if valid {
			out.Zones = append(out.Zones, zone)
		}
	}
	if err := v.Err(); err != nil {
		return Config{}, err
	}
	out.sort()
	return out, nil
}

// parseAddress validates a socket address: a non-zero port, and a specific
// address unless anyAddress allows 0.0.0.0 or [::] (every interface).
func parseAddress(v *apierror.Violations, field, s string, anyAddress bool) (netip.AddrPort, bool) {
	addr, err := netip.ParseAddrPort(s)
	switch {
	case s == "":
		v.Add(field, "is required")
	case err != nil:
		v.Add(field, "%q is not an ip:port socket address", s)
	case addr.Port() == 0 || (addr.Addr().IsUnspecified() && !anyAddress):
		v.Add(field, "%q needs a specific address and a non-zero port", s)
	default:
		return netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()), true
	}
	return netip.AddrPort{}, false
}

// validNexus checks a zone's nexus details: required for a nexus zone,
// refused for any other, and filled into zone.
func validNexus(v *apierror.Violations, field string, kind Kind, n *sledagentv1.NexusZoneDetails, zone *Zone,
	claim func(string, netip.AddrPort)) bool {
	field += ".nexus"
	switch {
	case kind != KindNexus && n != nil:
		v.Add(field, "is only for a nexus zone, not a %s zone", kind)
		return false
	case kind != KindNexus:
		return true
	case n == nil:
		v.Add(field, "is required for a nexus zone")
		return false
	}
	before := v.Len()
	if addr, ok := parseAddress(v, field+".external_address", n.GetExternalAddress(), true); ok {
		zone.Nexus.ExternalAddress = addr
		claim("nexus.external_address", addr)
	}
	if addr, ok := parseAddress(v, field+".metrics_address", n.GetMetricsAddress(), true); ok {
		zone.Nexus.MetricsAddress = addr
		claim("nexus.metrics_address", addr)
	}
	switch n.GetDatabaseBackend() {
	case "sqlite", "postgres":
		zone.Nexus.DatabaseBackend = n.GetDatabaseBackend()
	default:
		v.Add(field+".database_backend", "%q is not sqlite or postgres", n.GetDatabaseBackend())
	}
	if zone.Nexus.DatabaseURL = n.GetDatabaseUrl(); zone.Nexus.DatabaseURL == "" {
		v.Add(field+".database_url", "is required")
	}
	return v.Len() == before
}

func describeKind(k sledagentv1.ZoneKind) string {
	if name, ok := sledagentv1.ZoneKind_name[int32(k)]; ok {
		return name
	}
	return fmt.Sprintf("%d", int32(k))
}

func (c *Config) sort() {
	slices.SortFunc(c.Zones, func(a, b Zone) int { return strings.Compare(a.ID.String(), b.ID.String()) })
}

// Equal reports whether two configs have the same generation and zones.
func (c Config) Equal(o Config) bool {
	return c.Generation == o.Generation && slices.Equal(c.Zones, o.Zones)
}

// SameZones reports whether two configs ask for the same zones, whatever
// their generations.
func (c Config) SameZones(o Config) bool { return slices.Equal(c.Zones, o.Zones) }

// Zone returns the zone with the given id.
func (c Config) Zone(id uuid.UUID) (Zone, bool) {
	for _, z := range c.Zones {
		if z.ID == id {
			return z, true
		}
	}
	return Zone{}, false
}

// Proto returns the wire form of c.
func (c Config) Proto() *sledagentv1.OmicronZonesConfig {
	out := &sledagentv1.OmicronZonesConfig{Generation: c.Generation}
	for _, z := range c.Zones {
		out.Zones = append(out.Zones, z.Proto())
	}
	return out
}

// Proto returns the wire form of z.
func (z Zone) Proto() *sledagentv1.OmicronZoneConfig {
	out := &sledagentv1.OmicronZoneConfig{
		Id:             z.ID.String(),
		Kind:           z.Kind.Proto(),
		FilesystemPool: z.FilesystemPool,
		Address:        z.Address.String(),
	}
	if z.Kind == KindNexus {
		out.Nexus = &sledagentv1.NexusZoneDetails{ExternalAddress: z.Nexus.ExternalAddress.String(),
			MetricsAddress: z.Nexus.MetricsAddress.String(), DatabaseBackend: z.Nexus.DatabaseBackend,
			DatabaseUrl: z.Nexus.DatabaseURL}
	}
	return out
}
