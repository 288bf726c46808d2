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
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/sledclient"
	"github.com/rackplane/rackplane/services/nexus/wire"
)

// Options bound the setup.
type Options struct {
	// ReadyBound is how long sled-agents have to take their configs and
	// the nexus zones to answer.
	ReadyBound time.Duration
	Log        *zap.Logger
	// Trust is the operator's rack identity: rack setup calls the
	// sled-agents and the nexus zones over mutual TLS with it (S2, S4).
	Trust rackpki.Trust
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
	var rack uuid.UUID // the recorded one, or a new one
	if p.Rack != "" {
		rack = uuid.MustParse(p.Rack)
	}
	deadline := time.Now().Add(o.ReadyBound)
	sleds := sledclient.NewPool(planAddresses(p), o.Trust)
	defer sleds.Close()
	// Each sled is asked what it is before anything is recorded: a plan
	// that puts a zone on a pool its sled lacks would be refused by the
	// sled, after the rack was set up from it.
	if err := checkSleds(ctx, sleds, p, deadline); err != nil {
		return nil, err
	}
	ds, err := datastore.Open(ctx, datastore.Backend(p.Database.Backend), p.Database.URL, o.Log.Named("datastore"))
	if err != nil {
		return nil, fmt.Errorf("opening the database: %w", err)
	}
	defer ds.Close()
	recorded, err := ds.RackSetUp(ctx, rack, p.rackPlan(), time.Now())
	if err != nil {
		return nil, err
	}
	if recorded {
		o.Log.Info("rack plan recorded", zap.Int("sleds", len(p.Sleds)))
	} else {
		o.Log.Info("the rack was set up from this plan already; pushing the zones configs nexus holds")
	}
	for _, s := range p.Sleds {
		id := uuid.MustParse(s.ID)
		cfg, err := ds.SledZonesGet(ctx, id)
		if err != nil {
			return nil, err
		}
		err = untilDeadline(ctx, deadline, func() (bool, error) {
			err := sleds.EnsureZones(ctx, id, cfg)
			return !errors.Is(err, model.ErrSledUnreachable), err
		})
		if err := ds.SledZonesPushed(ctx, id, cfg.Generation, err, time.Now()); err != nil {
			return nil, err
		}
		switch {
		case errors.Is(err, model.ErrZonesOutdated):
			// Someone gave it a newer one by hand; nexus's is not forced on it.
			o.Log.Warn("the sled runs a newer zones config than nexus holds; left as it is",
				zap.Stringer("sled_id", id), zap.Uint64("generation", cfg.Generation), zap.Error(err))
		case err != nil:
			return nil, fmt.Errorf("sled %s at %s: %w", id, s.Address, err)
		default:
			o.Log.Info("zones config pushed", zap.Stringer("sled_id", id), zap.Uint64("generation", cfg.Generation))
		}
	}
	replicas, err := ds.NexusZoneList(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range replicas {
		if n.State != model.NexusActive {
			continue
		}
		if err := waitServing(ctx, o.Trust, n, deadline); err != nil {
			return nil, fmt.Errorf("nexus %s at %s: %w", n.ID, n.InternalAddress, err)
		}
		o.Log.Info("nexus replica answers", zap.Stringer("nexus_id", n.ID), zap.String("internal_address", n.InternalAddress))
	}
	return replicas, nil
}

// checkSleds asks each sled of the plan what it is, waiting while it does
// not answer: the sled at each address must be the plan's, and have the
// pools the plan puts zones on.
func checkSleds(ctx context.Context, sleds *sledclient.Pool, p Plan, deadline time.Time) error {
	var problems []string
	for i, s := range p.Sleds {
		id := uuid.MustParse(s.ID)
		var inv model.SledInventory
		err := untilDeadline(ctx, deadline, func() (bool, error) {
			var err error
			inv, err = sleds.Inventory(ctx, id)
			return !errors.Is(err, model.ErrSledUnreachable), err
		})
		if err != nil {
			problems = append(problems, fmt.Sprintf("sleds[%d]: the sled at %s: %v", i, s.Address, err))
			continue
		}
		for j, z := range s.Zones {
			if !slices.Contains(inv.Zpools, z.Pool) {
				problems = append(problems, fmt.Sprintf("sleds[%d].zones[%d].pool: %s is not a pool of sled %s (it has %s)",
					i, j, z.Pool, id, strings.Join(inv.Zpools, ", ")))
			}
		}
	}
	if len(problems) > 0 {
		return errors.New("the rack plan does not fit its sleds; nothing was recorded:\n  " + strings.Join(problems, "\n  "))
	}
	return nil
}

// planAddresses resolves the plan's sleds to their addresses: rack setup
// reaches them before they have registered with any nexus.
type planAddresses Plan

func (p planAddresses) SledAddresses(context.Context) (map[uuid.UUID]string, error) {
	out := make(map[uuid.UUID]string, len(p.Sleds))
	for _, s := range p.Sleds {
		id, err := uuid.Parse(s.ID)
		if err != nil {
			return nil, fmt.Errorf("the plan's sled %q: %w", s.ID, err)
		}
		out[id] = s.Address
	}
	return out, nil
}

// retry spaces attempts at a sled-agent or nexus that is not up yet.
var retry = backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second, Jitter: 0.2}

// waitServing waits until the nexus replica n answers at its internal
// address, as itself: another process there (an old replica of another
// rack, say) is not n.
func waitServing(ctx context.Context, trust rackpki.Trust, n model.NexusZone, deadline time.Time) error {
	conn, err := grpcconn.Dial(n.InternalAddress, trust, rackpki.Identity{Kind: rackpki.Nexus, ID: n.ID.String()}, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	return untilDeadline(ctx, deadline, func() (bool, error) {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: wire.ReplicaHealthService(n.ID)})
		switch {
		case status.Code(err) == codes.NotFound:
			err = fmt.Errorf("another process answers at %s, not replica %s", n.InternalAddress, n.ID)
		case err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
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
