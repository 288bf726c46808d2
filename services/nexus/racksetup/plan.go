package racksetup

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"sigs.k8s.io/yaml"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/wire"
)

// Plan is what a rack starts from, as an operator writes it. Ids are text
// so that a bad one is reported with its place in the plan.
type Plan struct {
	// Rack names the rack; a new one is made up when empty.
	Rack     string   `json:"rack,omitempty"`
	Database Database `json:"database"`
	Sleds    []Sled   `json:"sleds"`
}

// Database is the one every nexus replica uses.
type Database struct {
	// Backend is "sqlite" (one replica) or "postgres".
	Backend string `json:"backend"`
	// URL is the SQLite file (an absolute path) or the PostgreSQL
	// connection string.
	URL string `json:"url"`
}

// Sled is one sled of the plan: where its agent listens, and its zones.
type Sled struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Zones   []Zone `json:"zones"`
}

// Zone is one zone of a sled's first config.
type Zone struct {
	ID   string         `json:"id"`
	Kind model.ZoneKind `json:"kind"`
	// Pool is the zpool holding the zone's filesystem, oxp_<uuid>.
	Pool string `json:"pool"`
	// Address is the zone's ip:port; a nexus zone's internal API.
	Address string `json:"address"`
	// Nexus is required for a nexus zone, and only there: where its REST
	// API and metrics listen. Its database is the plan's.
	Nexus *NexusListeners `json:"nexus,omitempty"`
}

// NexusListeners are a nexus zone's other listeners, ip:port each
// (0.0.0.0 for every interface).
type NexusListeners struct {
	ExternalAddress string `json:"external_address"`
	MetricsAddress  string `json:"metrics_address"`
}

// LoadPlan reads a plan from a YAML (or JSON) file and validates it;
// unknown keys are errors.
func LoadPlan(path string) (Plan, error) {
	var p Plan
	if path == "" {
		return p, errors.New("no rack plan given (--plan)")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return p, err
	}
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return p, fmt.Errorf("%s: %w", path, err)
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Validate reports every problem of the plan, each naming its place, so
// that nothing is recorded that a sled would refuse (it checks each zones
// config again when it gets it, Z2) or that could not run.
func (p Plan) Validate() error {
	var problems []string
	bad := func(field, format string, args ...any) {
		problems = append(problems, field+": "+fmt.Sprintf(format, args...))
	}
	id := func(field, text string) uuid.UUID {
		u, err := uuid.Parse(text)
		switch {
		case text == "":
			bad(field, "is required")
		case err != nil || len(text) != 36:
			bad(field, "%q is not a UUID (8-4-4-4-12 hex digits)", text)
		case u == uuid.Nil:
			bad(field, "must not be the nil UUID")
		}
		return u
	}
	if p.Rack != "" {
		id("rack", p.Rack)
	}
	switch p.Database.Backend {
	case "postgres":
	case "sqlite":
		if p.Database.URL != "" && !filepath.IsAbs(p.Database.URL) {
			bad("database.url", "%q must be an absolute path: each nexus zone opens it from its own directory", p.Database.URL)
		}
	default:
		bad("database.backend", "%q is not sqlite or postgres", p.Database.Backend)
	}
	if p.Database.URL == "" {
		bad("database.url", "is required")
	}
	if len(p.Sleds) == 0 {
		bad("sleds", "a rack needs at least one sled")
	}
	sledIDs, sledAddrs, zoneIDs := map[uuid.UUID]string{}, map[string]string{}, map[uuid.UUID]string{}
	// Specific socket addresses are the rack's: one per zone listener,
	// whichever sled. A wildcard one (0.0.0.0, [::]) takes its port on
	// every address of its sled.
	rackAddrs := map[netip.AddrPort]string{}
	nexuses := 0
	for i, s := range p.Sleds {
		field := fmt.Sprintf("sleds[%d]", i)
		if u := id(field+".id", s.ID); u != uuid.Nil {
			if other, dup := sledIDs[u]; dup {
				bad(field+".id", "%s is also %s's", u, other)
			}
			sledIDs[u] = field
		}
		if host, port, err := net.SplitHostPort(s.Address); err != nil || host == "" || !validPort(port) {
			bad(field+".address", "%q is not host:port", s.Address)
		} else if other, dup := sledAddrs[s.Address]; dup {
			bad(field+".address", "%s is also %s's", s.Address, other)
		}
		sledAddrs[s.Address] = field
		ports, ntp := map[uint16][]string{}, ""
		wildcard := map[uint16]string{}
		for j, z := range s.Zones {
			zfield := fmt.Sprintf("%s.zones[%d]", field, j)
			if u := id(zfield+".id", z.ID); u != uuid.Nil {
				if other, dup := zoneIDs[u]; dup {
					bad(zfield+".id", "%s is also %s's", u, other)
				}
				zoneIDs[u] = zfield
			}
			if wire.ZoneKind(z.Kind) == sledagentv1.ZoneKind_ZONE_KIND_UNSPECIFIED || string(z.Kind) != strings.ToLower(string(z.Kind)) {
				bad(zfield+".kind", "%q is not a zone kind (nexus, internal_ntp, crucible …, in lowercase)", z.Kind)
			}
			if z.Kind == "internal_ntp" || z.Kind == "boundary_ntp" {
				if ntp != "" {
					bad(zfield+".kind", "a sled runs one NTP zone, and %s is one already", ntp)
				}
				ntp = zfield
			}
			if pool, ok := strings.CutPrefix(z.Pool, "oxp_"); !ok || uuid.Validate(pool) != nil || len(pool) != 36 {
				bad(zfield+".pool", "%q is not a zpool name oxp_<uuid>", z.Pool)
			}
			claim := func(name, text string, anyAddress bool) {
				a, err := netip.ParseAddrPort(text)
				if err != nil {
					bad(zfield+"."+name, "%q is not an ip:port socket address", text)
					return
				}
				// ::ffff:10.0.0.1 is 10.0.0.1, as the sled takes it.
				a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
				where := zfield + "." + name
				switch {
				case a.Port() == 0 || (a.Addr().IsUnspecified() && !anyAddress):
					bad(where, "%q needs a specific address and a non-zero port", text)
					return
				case a.Addr().IsUnspecified():
					if others := ports[a.Port()]; len(others) > 0 {
						bad(where, "%s takes port %d on every address of the sled, which %s uses", a, a.Port(), others[0])
					}
					wildcard[a.Port()] = where
				default:
					if other, dup := rackAddrs[a]; dup {
						bad(where, "%s is also %s", a, other)
					} else {
						rackAddrs[a] = where
					}
				}
				if other, ok := wildcard[a.Port()]; ok && other != where {
					bad(where, "port %d is taken on every address of the sled by %s", a.Port(), other)
				}
				ports[a.Port()] = append(ports[a.Port()], where)
			}
			claim("address", z.Address, false)
			switch {
			case z.Kind == model.ZoneNexus && z.Nexus == nil:
				bad(zfield+".nexus", "is required for a nexus zone (external_address, metrics_address)")
			case z.Kind != model.ZoneNexus && z.Nexus != nil:
				bad(zfield+".nexus", "is only for a nexus zone, not %s", z.Kind)
			case z.Nexus != nil:
				nexuses++
				claim("nexus.external_address", z.Nexus.ExternalAddress, true)
				claim("nexus.metrics_address", z.Nexus.MetricsAddress, true)
			}
		}
	}
	switch {
	case nexuses == 0 && len(p.Sleds) > 0:
		bad("sleds", "no nexus zone: a rack needs at least one replica")
	case nexuses > 1 && p.Database.Backend == "sqlite":
		bad("database.backend", "%d nexus replicas need postgres", nexuses)
	}
	if len(problems) > 0 {
		return errors.New("invalid rack plan:\n  " + strings.Join(problems, "\n  "))
	}
	return nil
}

func validPort(port string) bool {
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n > 0
}

// rackPlan is the plan as nexus records it: each sled's first zones config,
// its nexus zones using the plan's database. The plan must be valid.
func (p Plan) rackPlan() model.RackPlan {
	var out model.RackPlan
	for _, s := range p.Sleds {
		sz := model.SledZones{SledID: uuid.MustParse(s.ID), Generation: 1}
		for _, z := range s.Zones {
			zone := model.Zone{ID: uuid.MustParse(z.ID), Kind: z.Kind, Pool: z.Pool, Address: z.Address}
			if z.Nexus != nil {
				zone.Nexus = &model.NexusZoneDetails{ExternalAddress: z.Nexus.ExternalAddress,
					MetricsAddress: z.Nexus.MetricsAddress, DatabaseBackend: p.Database.Backend, DatabaseURL: p.Database.URL}
			}
			sz.Zones = append(sz.Zones, zone)
		}
		out.Sleds = append(out.Sleds, sz)
	}
	return out
}
