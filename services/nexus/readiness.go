package nexus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rackplane/rackplane/services/nexus/datastore"
)

const (
	// ReadinessTimeout bounds the database's answer to one readiness
	// check: a database that takes longer cannot serve requests either.
	// A prober must wait longer than this (deploy/composetest checks
	// docker-compose.yml's).
	ReadinessTimeout = 2 * time.Second
	// readinessPeriod is how often gRPC health is brought in line with
	// readiness.
	readinessPeriod = time.Second
)

// The checks a Readiness names, and their passing results.
const (
	checkDatabase   = "database"
	checkMigrations = "migrations"
	checkReplica    = "replica"

	resultOK     = "ok"
	replicaReady = "active"
)

// Readiness says whether this replica should be given work (N11): its
// database answers in time, holds every migration this binary knows, and
// this replica is active (not expunged, X3, and not stopping). It is what
// GET /readyz answers and what gRPC health reports.
type Readiness struct {
	// Status is "ready" or "not_ready".
	Status string `json:"status"`
	// Checks maps each check to "ok" ("active" for the replica) or to why
	// it fails.
	Checks map[string]string `json:"checks"`
}

// Ready reports whether every check passed.
func (r Readiness) Ready() bool { return r.Status == "ready" }

// Readiness checks this replica now; it takes at most ReadinessTimeout.
func (s *Server) Readiness(ctx context.Context) Readiness {
	ctx, cancel := context.WithTimeout(ctx, ReadinessTimeout)
	defer cancel()
	database, migrations, answered := s.checkSchema(ctx)
	checks := map[string]string{checkDatabase: database, checkMigrations: migrations, checkReplica: s.replicaState(ctx, answered)}
	r := Readiness{Status: "ready", Checks: checks}
	if database != resultOK || migrations != resultOK || checks[checkReplica] != replicaReady {
		r.Status = "not_ready"
	}
	return r
}

// checkSchema asks the database how far its schema is, within
// ReadinessTimeout: one query says both that it answers and whether it
// holds every migration this binary knows.
func (s *Server) checkSchema(ctx context.Context) (database, migrations string, answered bool) {
	unanswered := func(err error) (string, string, bool) {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Sprintf("unreachable: no answer within %s", ReadinessTimeout), "unknown: the database did not answer", false
		}
		return "unreachable: " + err.Error(), "unknown: the database did not answer", false
	}
	applied, err := s.ds.SchemaVersion(ctx)
	if err != nil {
		return unanswered(err)
	}
	readOnly, err := s.ds.ReadOnly(ctx)
	switch {
	case err != nil:
		return unanswered(err)
	case readOnly:
		database = "read-only: it refuses writes (a standby, or read-only sessions)"
	default:
		database = resultOK
	}
	// A database ahead of this binary (a newer replica migrated it) may
	// lack what this code reads, as a database behind it lacks what it
	// writes: either way this replica is not the one to serve.
	switch known := datastore.SchemaKnown(); {
	case applied < known:
		return database, fmt.Sprintf("the database is at schema version %d; this nexus needs %d", applied, known), true
	case applied > known:
		return database, fmt.Sprintf("the database is at schema version %d, newer than this nexus's %d: it runs an older release", applied, known), true
	}
	return database, resultOK, true
}

// replicaState is "active" unless this replica is stopping or expunged
// (X3). It reads the replica's record, so that it is not ready from the
// expunge's commit on, not only once replica_check next runs; seeing it
// expunged stops the replica as replica_check would. With the database
// unreachable it says what this replica last knew.
func (s *Server) replicaState(ctx context.Context, databaseAnswers bool) string {
	select {
	case <-s.stopped:
		return "stopping"
	default:
	}
	if databaseAnswers {
		if _, err := s.app.CheckReplica(ctx); err != nil {
			return "unknown: " + err.Error()
		}
	}
	if s.app.IsExpunged() {
		return "expunged"
	}
	return replicaReady
}

// serveReadyz answers GET /readyz: 200 when ready, else 503, with the
// checks either way.
func (s *Server) serveReadyz(w http.ResponseWriter, r *http.Request) {
	ready := s.Readiness(r.Context())
	status := http.StatusOK
	if !ready.Ready() {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, ready)
}

// serveHealthz answers GET /healthz: the process serves HTTP, nothing
// more. A liveness probe that depended on the database would restart every
// replica when the database is down, which mends nothing.
func serveHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the prober went away
}

// reportReadiness sets every gRPC health service this replica registers
// to what Readiness says every readinessPeriod, logging each change, until
// Shutdown or the expunge: both shut the health server down, NOT_SERVING
// for good.
func (s *Server) reportReadiness() {
	ticker := time.NewTicker(readinessPeriod)
	defer ticker.Stop()
	for {
		select {
		case <-s.stopped:
			return
		case <-s.app.Expunged():
			return
		case <-ticker.C:
			s.updateHealth()
		}
	}
}

// updateHealth checks readiness once and reports it through gRPC health.
func (s *Server) updateHealth() {
	ready := s.Readiness(context.Background())
	status := healthpb.HealthCheckResponse_SERVING
	if !ready.Ready() {
		status = healthpb.HealthCheckResponse_NOT_SERVING
	}
	if s.lastHealth.Swap(int32(status)) != int32(status) {
		log := s.log.Info
		if status != healthpb.HealthCheckResponse_SERVING {
			log = s.log.Warn
		}
		log("readiness changed", zap.String("status", ready.Status), zap.Any("checks", ready.Checks))
	}
	for _, svc := range s.healthServices {
		s.health.SetServingStatus(svc, status)
	}
}
