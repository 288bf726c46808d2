package saga

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"go.uber.org/zap"
)

// Recover resumes every unfinished saga this nexus owns, from its log: a
// node started but not finished runs again, an unwinding saga goes on
// unwinding. Sagas of other nexuses are left alone. It returns how many it
// resumed; a saga it cannot resume (unknown template, a log that does not
// fit its template) stays as it is and is reported in the error.
//
// It is for a nexus that starts, before it runs any saga of its own: a
// saga of this engine that finishes while Recover reads its log would be
// run again from that log. Sagas taken over from another replica are
// resumed with Adopt.
func (e *Engine) Recover(ctx context.Context) (int, error) {
	recs, err := e.store.SagaListUnfinished(ctx, e.nexusID)
	if err != nil {
		return 0, fmt.Errorf("listing unfinished sagas: %w", err)
	}
	resumed, err := e.resume(ctx, recs)
	if err != nil {
		e.log.Error("some sagas could not be resumed", zap.Error(err))
	}
	return resumed, err
}

// Adopt resumes the sagas ids, just taken over from another replica (X4):
// since they were another's until then, none can be running here. A saga
// that is not this nexus's, or has finished, is left alone.
func (e *Engine) Adopt(ctx context.Context, ids []uuid.UUID) (int, error) {
	var (
		recs []Record
		errs []error
	)
	for _, id := range ids {
		rec, err := e.store.SagaGet(ctx, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("saga %s: %w", id, err))
			continue
		}
		if rec.Owner == e.nexusID && !rec.State.Finished() {
			recs = append(recs, rec)
		}
	}
	resumed, err := e.resume(ctx, recs)
	errs = append(errs, err)
	err = errors.Join(errs...)
	if err != nil {
		e.log.Error("some adopted sagas could not be resumed", zap.Error(err))
	}
	return resumed, err
}

// resume launches each saga from its log.
func (e *Engine) resume(ctx context.Context, recs []Record) (int, error) {
	var (
		errs    []error
		resumed int
	)
	for _, rec := range recs {
		tmpl, ok := e.template(rec.Template)
		if !ok {
			errs = append(errs, fmt.Errorf("saga %s: %w %q", rec.ID, ErrUnknownTemplate, rec.Template))
			continue
		}
		events, err := e.store.SagaEvents(ctx, rec.ID)
		if err != nil {
			errs = append(errs, fmt.Errorf("saga %s: loading its log: %w", rec.ID, err))
			continue
		}
		x, err := e.newExecution(rec, tmpl, events)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !e.admit() {
			errs = append(errs, ErrStopped)
			break
		}
		x.log.Info("resuming saga", zap.String("state", string(rec.State)))
		if e.launch(x) {
			resumed++
		}
	}
	e.stats.recovered.Add(int64(resumed))
	return resumed, errors.Join(errs...)
}
