package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/services/nexus/model"
)

// RackReader is what the rack metrics read from the database at scrape
// time; the datastore answers it.
type RackReader interface {
	InventoryAges(ctx context.Context) (map[uuid.UUID]time.Time, error)
	ZonesExpungedUnconfirmed(ctx context.Context) (int64, error)
	NexusZoneList(ctx context.Context) ([]model.NexusZone, error)
	ReplicaClaimsGet(ctx context.Context) (map[uuid.UUID]model.ReplicaClaims, error)
}

// rackCollector reads the rack's state at scrape time (X7): every replica
// reports the same rack-wide figures.
type rackCollector struct {
	read RackReader
	now  func() time.Time

	inventoryAge, unconfirmed, sagas, locks, replicas *prometheus.Desc
}

// RegisterRack adds the rack metrics (X7): each sled's inventory age, the
// expunged zones not yet confirmed gone, and per replica its state, its
// sagas by state and its updater locks. Reassignments and orphan VMMs are
// counted by the replica that does them (Events).
func (m *Metrics) RegisterRack(read RackReader) error {
	return m.registry.Register(&rackCollector{read: read, now: time.Now,
		inventoryAge: prometheus.NewDesc("nexus_sled_inventory_age_seconds",
			"Seconds since each sled's latest inventory was collected (Z9).", []string{"sled_id"}, nil),
		unconfirmed: prometheus.NewDesc("nexus_zones_expunged_unconfirmed",
			"Expunged zones whose sleds have not proved them gone yet: their replicas' sagas wait (X4).", nil, nil),
		sagas: prometheus.NewDesc("nexus_replica_sagas",
			"Unfinished and stuck sagas per owning replica (X6).", []string{"nexus_id", "state"}, nil),
		locks: prometheus.NewDesc("nexus_replica_updater_locks",
			"Instance updater locks held by each replica's sagas (X6).", []string{"nexus_id"}, nil),
		replicas: prometheus.NewDesc("nexus_replica_info",
			"Each nexus replica and its state (1 per replica).", []string{"nexus_id", "state"}, nil),
	})
}

// Describe implements prometheus.Collector.
func (c *rackCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.inventoryAge, c.unconfirmed, c.sagas, c.locks, c.replicas} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *rackCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), stuckCountTimeout)
	defer cancel()
	ages, err := c.read.InventoryAges(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.inventoryAge, err)
	}
	now := c.now()
	for sled, at := range ages {
		ch <- prometheus.MustNewConstMetric(c.inventoryAge, prometheus.GaugeValue, now.Sub(at).Seconds(), sled.String())
	}
	if n, err := c.read.ZonesExpungedUnconfirmed(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(c.unconfirmed, err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.unconfirmed, prometheus.GaugeValue, float64(n))
	}
	replicas, errReplicas := c.read.NexusZoneList(ctx)
	claims, errClaims := c.read.ReplicaClaimsGet(ctx)
	if err := errors.Join(errReplicas, errClaims); err != nil {
		ch <- prometheus.NewInvalidMetric(c.replicas, err)
		return
	}
	for _, r := range replicas {
		id := r.ID.String()
		ch <- prometheus.MustNewConstMetric(c.replicas, prometheus.GaugeValue, 1, id, string(r.State))
		cl := claims[r.ID]
		for state, n := range map[string]int64{"running": cl.Running, "unwinding": cl.Unwinding, "stuck": cl.Stuck} {
			ch <- prometheus.MustNewConstMetric(c.sagas, prometheus.GaugeValue, float64(n), id, state)
		}
		ch <- prometheus.MustNewConstMetric(c.locks, prometheus.GaugeValue, float64(cl.UpdaterLocks), id)
	}
}
