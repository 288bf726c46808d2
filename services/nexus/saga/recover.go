package saga

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
)

// Recover resumes every unfinished saga this nexus owns, from its log: a
// node started but not finished runs again, an unwinding saga goes on
// unwinding. Sagas of other nexuses are left alone. It returns how many it
// resumed; a saga it cannot resume (unknown template, a log that does not
// fit its template) stays as it is and is reported in the error.
func (e *Engine) Recover(ctx context.Context) (int, error) {
	recs, err := e.store.SagaListUnfinished(ctx, e.nexusID)
	if err != nil {
		return 0, fmt.Errorf("listing unfinished sagas: %w", err)
	}
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
	err = errors.Join(errs...)
	if err != nil {
		e.log.Error("some sagas could not be resumed", zap.Error(err))
	}
	return resumed, err
}
