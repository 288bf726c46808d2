// Package racksetup starts a rack from a plan (SPEC Z11): the sleds, the
// zones each runs (the nexus replicas at least) and the database. It is the
// one place that does it, for the local cluster, docker-compose (`nexus
// rack-setup`) and the test harness:
//
//  1. it opens the database, migrating its schema;
//  2. it records the plan there in one transaction (the rack, each sled's
//     first zones config, a nexus_zone row per replica, X2), so that nexus
//     owns the zones configs from then on; a rack set up already is left as
//     it is, and one set up with other replicas is refused;
//  3. it pushes each sled the zones config the database holds for it
//     (EnsureZones, retried while the sled-agent is not up yet);
//  4. it waits until every nexus zone answers.
//
// Running it again on a set-up rack is how a stopped rack starts again.
package racksetup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/wire"
)

// Plan is what a rack starts from.
type Plan struct {
	// Rack names the rack; a new one is made up when empty.
	Rack     uuid.UUID `json:"rack"`
	Database Database  `json:"database"`
	Sleds    []Sled    `json:"sleds"`
}

// Database is the one every nexus replica uses.
type Database struct {
	// Backend is "sqlite" (one replica) or "postgres".
	Backend string `json:"backend"`
	// URL is the SQLite file or the PostgreSQL connection string.
	URL string `json:"url"`
}

// Sled is one sled of the plan: where its agent listens, and its zones.
type Sled struct {
	ID      uuid.UUID `json:"id"`
	Address string    `json:"address"`
	Zones   []Zone    `json:"zones"`
}

// Zone is one zone of a sled's first config.
type Zone struct {
	ID   uuid.UUID      `json:"id"`
	Kind model.ZoneKind `json:"kind"`
	Pool string         `json:"pool"`
	// Address is the zone's address; a nexus zone's internal API.
	Address string `json:"address"`
	// Nexus is required for a nexus zone: where its REST API and metrics
	// listen. Its database is the plan's.
	Nexus *NexusListeners `json:"nexus,omitempty"`
}

// NexusListeners are a nexus zone's other listeners.
type NexusListeners struct {
	ExternalAddress string `json:"external_address"`
	MetricsAddress  string `json:"metrics_address"`
}

// LoadPlan reads a plan from a YAML (or JSON) file; unknown keys are errors.
func LoadPlan(path string) (Plan, error) {
	var p Plan
	data, err := os.ReadFile(path)
	if err != nil {
		return p, err
	}
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return p, fmt.Errorf("%s: %w", path, err)
	}
	return p, p.Validate()
}

// Validate reports every problem of the plan, each naming its place. The
// sled-agents check each zones config in full when they get it (Z2).
func (p Plan) Validate() error {
	var problems []string
	bad := func(field, format string, args ...any) {
		problems = append(problems, field+": "+fmt.Sprintf(format, args...))
	}
	switch p.Database.Backend {
	case "sqlite", "postgres":
	default:
		bad("database.backend", "%q is not sqlite or postgres", p.Database.Backend)
	}
	if p.Database.URL == "" {
		bad("database.url", "is required")
	}
	nexuses := 0
	for i, s := range p.Sleds {
		field := fmt.Sprintf("sleds[%d]", i)
		if s.ID == uuid.Nil {
			bad(field+".id", "is required")
		}
		if _, _, err := net.SplitHostPort(s.Address); err != nil {
			bad(field+".address", "%q is not host:port", s.Address)
		}
		for j, z := range s.Zones {
			zfield := fmt.Sprintf("%s.zones[%d]", field, j)
			if z.Kind == model.ZoneNexus {
				nexuses++
				if z.Nexus == nil {
					bad(zfield+".nexus", "is required for a nexus zone")
				}
			}
		}
	}
	switch {
	case nexuses == 0:
		bad("sleds", "no nexus zone: a rack needs at least one replica")
	case nexuses > 1 && p.Database.Backend != "postgres":
		bad("database.backend", "%d nexus replicas need postgres", nexuses)
	}
	if len(problems) > 0 {
		return errors.New("invalid rack plan:\n  " + strings.Join(problems, "\n  "))
	}
	return nil
}

// rackPlan is the plan as nexus records it: each sled's first zones config,
// its nexus zones using the plan's database.
func (p Plan) rackPlan() model.RackPlan {
	var out model.RackPlan
	for _, s := range p.Sleds {
		sz := model.SledZones{SledID: s.ID, Generation: 1}
		for _, z := range s.Zones {
			zone := model.Zone{ID: z.ID, Kind: z.Kind, Pool: z.Pool, Address: z.Address}
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

// Options bound the setup.
type Options struct {
	// ReadyBound is how long sled-agents have to take their configs and
	// the nexus zones to answer.
	ReadyBound time.Duration
	Log        *zap.Logger
}

// Run sets the rack up from the plan and returns its nexus replicas once
// each answers.
func Run(ctx context.Context, p Plan, o Options) ([]model.NexusZone, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.ReadyBound == 0 {
		o.ReadyBound = time.Minute
	}
	if p.Rack == uuid.Nil {
		p.Rack = uuid.New()
	}
	ds, err := datastore.Open(ctx, datastore.Backend(p.Database.Backend), p.Database.URL, o.Log.Named("datastore"))
	if err != nil {
		return nil, fmt.Errorf("opening the database: %w", err)
	}
	defer ds.Close()
	recorded, err := ds.RackSetUp(ctx, p.Rack, p.rackPlan(), time.Now())
	if err != nil {
		return nil, err
	}
	if recorded {
		o.Log.Info("rack plan recorded", zap.Stringer("rack_id", p.Rack), zap.Int("sleds", len(p.Sleds)))
	} else {
		o.Log.Info("the rack was set up already; pushing the zones configs nexus holds")
	}
	deadline := time.Now().Add(o.ReadyBound)
	for _, s := range p.Sleds {
		cfg, err := ds.SledZonesGet(ctx, s.ID)
		if err != nil {
			return nil, err
		}
		if err := push(ctx, s.Address, cfg, deadline); err != nil {
			return nil, fmt.Errorf("sled %s at %s: %w", s.ID, s.Address, err)
		}
		o.Log.Info("zones config pushed", zap.Stringer("sled_id", s.ID), zap.Uint64("generation", cfg.Generation))
	}
	replicas, err := ds.NexusZoneList(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range replicas {
		if n.State != model.NexusActive {
			continue
		}
		if err := waitServing(ctx, n.InternalAddress, deadline); err != nil {
			return nil, fmt.Errorf("nexus %s at %s: %w", n.ID, n.InternalAddress, err)
		}
		o.Log.Info("nexus replica answers", zap.Stringer("nexus_id", n.ID), zap.String("internal_address", n.InternalAddress))
	}
	return replicas, nil
}

// retry spaces attempts at a sled-agent or nexus that is not up yet.
var retry = backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second, Jitter: 0.2}

// push gives a sled-agent its zones config, retrying while it does not
// answer; a config it refuses fails at once.
func push(ctx context.Context, addr string, cfg model.SledZones, deadline time.Time) error {
	conn, err := grpcconn.Dial(addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := sledagentv1.NewSledAgentClient(conn)
	return untilDeadline(ctx, deadline, func() (bool, error) {
		_, err := client.EnsureZones(ctx, &sledagentv1.EnsureZonesRequest{Config: wire.ZonesConfig(cfg)})
		switch status.Code(err) {
		case codes.OK:
			return true, nil
		case codes.Unavailable, codes.DeadlineExceeded:
			return false, err
		}
		return true, err
	})
}

// waitServing waits until a nexus's internal API says it serves.
func waitServing(ctx context.Context, addr string, deadline time.Time) error {
	conn, err := grpcconn.Dial(addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	return untilDeadline(ctx, deadline, func() (bool, error) {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			err = fmt.Errorf("health %s", resp.GetStatus())
		}
		return err == nil, err
	})
}

// untilDeadline calls try until it is done or the deadline passes; then
// its last error is the answer.
func untilDeadline(ctx context.Context, deadline time.Time, try func() (done bool, err error)) error {
	for attempt := 0; ; attempt++ {
		done, err := try()
		if done {
			return err
		}
		wait := retry.Delay(attempt)
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("not ready in time: %w", err)
		}
		if backoff.Sleep(ctx, wait) != nil {
			return ctx.Err()
		}
	}
}
