package metrics

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics holds one nexus replica's registry and the metrics it updates.
// Each replica has its own (tests run several in one process), never the
// global default registry.
type Metrics struct {
	registry *prometheus.Registry

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	grpcRequests *prometheus.CounterVec
	grpcDuration *prometheus.HistogramVec

	// ForceTerminations counts instance force-terminations by outcome
	// (nexus_instance_force_terminate_total{outcome}).
	ForceTerminations *prometheus.CounterVec
	// Events counts what this replica did for the rack (X7, N12):
	// nexus_events_total{event="sagas_reassigned"|"orphan_vmm_reaped"|"foreign_report_refused"|"force_terminate_lock_wait"|
	// "saga_pruned"|"saga_event_pruned"|"vmm_pruned"|"migration_pruned"}.
	Events *prometheus.CounterVec

	passDuration     *prometheus.HistogramVec
	passLastDuration *prometheus.GaugeVec
	passLastItems    *prometheus.GaugeVec
}

// durationBuckets reach below the default histogram buckets: a loopback
// gRPC call takes tens of microseconds, a request through the gateway and
// the database about a millisecond.
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// passBuckets straddle SPEC 6's 5 s bound on a pass over 1,000 sleds, and
// reach minutes for a pass held up by sleds that do not answer.
var passBuckets = []float64{.001, .01, .1, .5, 1, 2, 3, 4, 5, 7.5, 10, 20, 30, 60, 120}

// New returns a registry with the Go and process collectors and nexus's
// HTTP, gRPC and force-terminate metrics registered.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_http_requests_total",
			Help: "REST requests answered, by method, route pattern (\"unmatched\" when no route matched) and HTTP status code.",
		}, []string{"method", "route", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nexus_http_request_duration_seconds",
			Help:    "Time to answer a REST request, by method and route pattern.",
			Buckets: durationBuckets,
		}, []string{"method", "route"}),
		grpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_grpc_requests_total",
			Help: "Unary gRPC calls served (internal and external APIs), by service, method and gRPC status code.",
		}, []string{"service", "method", "code"}),
		grpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nexus_grpc_request_duration_seconds",
			Help:    "Time to serve a unary gRPC call, by service and method.",
			Buckets: durationBuckets,
		}, []string{"service", "method"}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_events_total",
			Help: "What this replica did for the rack: sagas it took over from expunged replicas (sagas_reassigned), VMMs nexus did not know that it unregistered (orphan_vmm_reaped), history it pruned (saga_pruned, saga_event_pruned, vmm_pruned, migration_pruned).",
		}, []string{"event"}),
		ForceTerminations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_instance_force_terminate_total",
			Help: "Instance force-terminations, by outcome.",
		}, []string{"outcome"}),
		passDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nexus_background_task_duration_seconds",
			Help:    "Time a background task's pass took, by task and outcome (ok or error).",
			Buckets: passBuckets,
		}, []string{"task", "outcome"}),
		passLastDuration: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nexus_background_task_last_duration_seconds",
			Help: "Time the last pass of a background task took, by task.",
		}, []string{"task"}),
		passLastItems: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nexus_background_task_last_items",
			Help: "What the last pass of a background task looked at, by task: sleds asked (inventory, zones_push, sled_liveness), VMMs asked (instance_watcher, orphan_vmms), instances (instance_updater, reincarnation, stop_wishes), sagas moved (saga_reassignment), rows deleted (prune_history).",
		}, []string{"task"}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.httpRequests, m.httpDuration, m.grpcRequests, m.grpcDuration, m.ForceTerminations, m.Events,
		m.passDuration, m.passLastDuration, m.passLastItems,
	)
	return m
}

// Registry is the replica's registry, for collectors registered elsewhere.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the registry in the Prometheus exposition formats. A
// collector that fails (the stuck-saga count when the database does not
// answer) is logged and left out; the other metrics are still served.
func (m *Metrics) Handler(log *zap.Logger) http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorLog:      errorLog{log},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.registry,
	})
}

// errorLog is promhttp's error logger, on zap.
type errorLog struct{ log *zap.Logger }

func (l errorLog) Println(v ...any) {
	l.log.Error("serving metrics", zap.String("detail", strings.TrimSpace(fmt.Sprintln(v...))))
}

// knownMethods bounds the method label: a client may send any token as an
// HTTP method.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

// ObserveHTTP records one answered REST request. route must be a route
// pattern, never a raw path, so that the label set stays bounded.
func (m *Metrics) ObserveHTTP(method, route string, code int, elapsed time.Duration) {
	if !knownMethods[method] {
		method = "other"
	}
	m.httpRequests.WithLabelValues(method, route, strconv.Itoa(code)).Inc()
	m.httpDuration.WithLabelValues(method, route).Observe(elapsed.Seconds())
}

// ObservePass records one background task pass (background.Observer).
func (m *Metrics) ObservePass(task string, elapsed time.Duration, items int, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.passDuration.WithLabelValues(task, outcome).Observe(elapsed.Seconds())
	m.passLastDuration.WithLabelValues(task).Set(elapsed.Seconds())
	m.passLastItems.WithLabelValues(task).Set(float64(items))
}

// UnaryServerInterceptor counts and times every unary call of the server
// it is installed on. Installed first in the chain, it also sees calls that
// an authentication interceptor refuses.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		service, method := splitFullMethod(info.FullMethod)
		m.grpcRequests.WithLabelValues(service, method, status.Code(err).String()).Inc()
		m.grpcDuration.WithLabelValues(service, method).Observe(time.Since(start).Seconds())
		return resp, err
	}
}

// splitFullMethod splits "/package.Service/Method". Only registered
// methods reach interceptors, so the labels stay bounded.
func splitFullMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndex(full, "/"); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}
