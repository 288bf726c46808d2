package app

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// Events PruneHistory counts (WithEventCounter): the rows of history it
// deleted, by kind.
const (
	EventSagaPruned      = "saga_pruned"
	EventSagaEventPruned = "saga_event_pruned"
	EventVMMPruned       = "vmm_pruned"
	EventMigrationPruned = "migration_pruned"
)

// PruneHistory deletes the history older than retention (SPEC N14):
// finished sagas with their logs, ended VMMs and resolved migrations that
// nothing points at any more (datastore.PruneHistory says what is kept and
// why). It is safe with several replicas running it at once, and what one
// pass leaves, the next finishes. What it deleted is logged and counted,
// also when it stops on an error.
func (n *Nexus) PruneHistory(ctx context.Context, retention time.Duration) (rowsDeleted int, err error) {
	cutoff := time.Now().Add(-retention)
	p, err := n.ds.PruneHistory(ctx, cutoff)
	rowsDeleted = int(p.Total())
	n.events(EventSagaPruned, int(p.Sagas))
	n.events(EventSagaEventPruned, int(p.SagaEvents))
	n.events(EventVMMPruned, int(p.VMMs))
	n.events(EventMigrationPruned, int(p.Migrations))
	if p.Total() > 0 || err != nil {
		fields := []zap.Field{zap.Time("cutoff", cutoff), zap.Int64("sagas", p.Sagas),
			zap.Int64("saga_events", p.SagaEvents), zap.Int64("vmms", p.VMMs), zap.Int64("migrations", p.Migrations)}
		if p.Horizon.Before(cutoff) {
			// An unfinished saga keeps what was created since it began.
			fields = append(fields, zap.Stringer("held_back_by_saga", p.OldestOpenSaga), zap.Time("horizon", p.Horizon))
		}
		if err != nil {
			n.log.Warn("pruned history, then failed", append(fields, zap.Error(err))...)
		} else {
			n.log.Info("pruned history", fields...)
		}
	}
	return rowsDeleted, err
}
