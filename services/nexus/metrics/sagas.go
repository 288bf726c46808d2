package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/services/nexus/saga"
)

// stuckCountTimeout bounds the one database query of a scrape.
const stuckCountTimeout = 5 * time.Second

// sagaCollector reads the saga engine's counters, and counts the stuck
// sagas in the database, at scrape time: nothing is copied in between.
type sagaCollector struct {
	stats      func() saga.Stats
	countStuck func(context.Context) (int64, error)

	running, total, stuck *prometheus.Desc
}

// RegisterSagas adds the saga metrics (SPEC N5): stats reads this
// replica's engine, countStuck counts every stuck saga in the database,
// whichever replica owns it.
func (m *Metrics) RegisterSagas(stats func() saga.Stats, countStuck func(context.Context) (int64, error)) error {
	return m.registry.Register(&sagaCollector{
		stats: stats, countStuck: countStuck,
		running: prometheus.NewDesc("nexus_sagas_running",
			"Sagas this nexus is executing now.", nil, nil),
		total: prometheus.NewDesc("nexus_sagas_total",
			"Sagas this nexus started or recovered, and how those it ran ended (done, unwound, stuck), since it started.",
			[]string{"outcome"}, nil),
		stuck: prometheus.NewDesc("nexus_sagas_stuck",
			"Stuck sagas in the database, of every nexus: each needs an operator (GET /v1/system/sagas/stuck).", nil, nil),
	})
}

// Describe implements prometheus.Collector.
func (c *sagaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.running
	ch <- c.total
	ch <- c.stuck
}

// Collect implements prometheus.Collector.
func (c *sagaCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, float64(s.Running))
	for _, o := range []struct {
		outcome string
		n       int64
	}{
		{"started", s.Started}, {"recovered", s.Recovered}, {"done", s.Done}, {"unwound", s.Unwound}, {"stuck", s.Stuck},
	} {
		ch <- prometheus.MustNewConstMetric(c.total, prometheus.CounterValue, float64(o.n), o.outcome)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stuckCountTimeout)
	defer cancel()
	n, err := c.countStuck(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.stuck, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.stuck, prometheus.GaugeValue, float64(n))
}
