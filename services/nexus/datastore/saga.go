package datastore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

var _ saga.Store = (*DataStore)(nil)

// SagaCreate inserts a saga, only if its owner is an active replica (X3):
// model.ErrReplicaNotActive otherwise, model.ErrAlreadyExists for a taken
// id.
func (d *DataStore) SagaCreate(ctx context.Context, r saga.Record) error {
	res, err := d.db.ExecContext(ctx, `
		INSERT INTO saga (id, template_name, params, owner_nexus_id, state, time_created, time_state_changed)
		SELECT $1, $2, $3, $4, $5, $6, $7 WHERE `+d.replicaActive("$4"),
		r.ID.String(), r.Template, string(r.Params), r.Owner.String(), string(r.State),
		ts(r.TimeCreated), ts(r.TimeStateChanged))
	if err != nil {
		return d.classify(err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	return notActive(r.Owner)
}

const sagaColumns = `id, template_name, params, owner_nexus_id, state, time_created, time_state_changed`

func scanSaga(row rowScanner) (saga.Record, error) {
	var (
		r                     saga.Record
		id, params, owner, st string
		created, stateChanged dbTime
	)
	if err := row.Scan(&id, &r.Template, &params, &owner, &st, &created, &stateChanged); err != nil {
		return saga.Record{}, err
	}
	r.ID, r.Owner, r.State = uuid.MustParse(id), uuid.MustParse(owner), saga.State(st)
	r.Params = json.RawMessage(params)
	r.TimeCreated, r.TimeStateChanged = created.Time, stateChanged.Time
	return r, nil
}

func notFoundSaga(id uuid.UUID) error {
	return fmt.Errorf("%w: %w %s", model.ErrNotFound, saga.ErrNotFound, id)
}

// SagaGet returns a saga's row; model.ErrNotFound (and saga.ErrNotFound) when
// there is none.
func (d *DataStore) SagaGet(ctx context.Context, id uuid.UUID) (saga.Record, error) {
	r, err := scanSaga(d.db.QueryRowContext(ctx, `SELECT `+sagaColumns+` FROM saga WHERE id = $1`, id.String()))
	if isNoRows(err) {
		return saga.Record{}, notFoundSaga(id)
	}
	return r, d.classify(err)
}

// SagaAppendEvent logs a node event once: an event of the same type for
// the same node is already the truth, so a repeat changes nothing.
// model.ErrConstraint for an unknown saga.
func (d *DataStore) SagaAppendEvent(ctx context.Context, e saga.Event) error {
	var output any
	if e.Output != nil {
		output = string(e.Output)
	}
	_, err := d.db.ExecContext(ctx, `
		INSERT INTO saga_node_event (saga_id, node_name, event_type, output, error, time_created)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (saga_id, node_name, event_type) DO NOTHING`,
		e.SagaID.String(), e.Node, string(e.Type), output, stringOrNil(e.Error), ts(e.Time))
	return d.classify(err)
}

// SagaUpdateState moves a saga from one state to another only if it is in
// state from and owned by owner: (true, nil) when written, (false, nil)
// when not, model.ErrNotFound when there is no such saga.
func (d *DataStore) SagaUpdateState(ctx context.Context, id, owner uuid.UUID, from, to saga.State, at time.Time) (bool, error) {
	res, err := d.db.ExecContext(ctx, `
		UPDATE saga SET state = $4, time_state_changed = $5
		WHERE id = $1 AND owner_nexus_id = $2 AND state = $3`,
		id.String(), owner.String(), string(from), string(to), ts(at))
	if err != nil {
		return false, d.classify(err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return n == 1, err
	}
	var exists int
	if err := d.db.QueryRowContext(ctx, `SELECT count(*) FROM saga WHERE id = $1`, id.String()).Scan(&exists); err != nil {
		return false, d.classify(err)
	}
	if exists == 0 {
		return false, notFoundSaga(id)
	}
	return false, nil
}

// SagaListUnfinished returns the running and unwinding sagas of owner,
// oldest first, so that a restarted nexus resumes them in the order they
// began.
func (d *DataStore) SagaListUnfinished(ctx context.Context, owner uuid.UUID) ([]saga.Record, error) {
	return list(ctx, d, scanSaga, `SELECT `+sagaColumns+` FROM saga
		WHERE owner_nexus_id = $1 AND state IN ('running', 'unwinding') ORDER BY time_created, id`, owner.String())
}

// SagaListStuck returns every stuck saga, oldest first.
func (d *DataStore) SagaListStuck(ctx context.Context) ([]saga.Record, error) {
	return list(ctx, d, scanSaga, `SELECT `+sagaColumns+` FROM saga WHERE state = 'stuck' ORDER BY time_created, id`)
}

// SagaCountStuck counts the stuck sagas of every nexus, for the metrics
// scrape: one count over the saga_stuck partial index.
func (d *DataStore) SagaCountStuck(ctx context.Context) (int64, error) {
	var n int64
	if err := d.db.QueryRowContext(ctx, `SELECT count(*) FROM saga WHERE state = 'stuck'`).Scan(&n); err != nil {
		return 0, d.classify(err)
	}
	return n, nil
}

// SagaEvents returns a saga's log ordered by time (events of one
// microsecond in no meaningful order: replay does not depend on it).
func (d *DataStore) SagaEvents(ctx context.Context, id uuid.UUID) ([]saga.Event, error) {
	return list(ctx, d, func(row rowScanner) (saga.Event, error) {
		var (
			e               saga.Event
			typ             string
			output, errText *string
			created         dbTime
		)
		if err := row.Scan(&e.Node, &typ, &output, &errText, &created); err != nil {
			return e, err
		}
		e.SagaID, e.Type, e.Time = id, saga.EventType(typ), created.Time
		if output != nil {
			e.Output = json.RawMessage(*output)
		}
		if errText != nil {
			e.Error = *errText
		}
		return e, nil
	}, `SELECT node_name, event_type, output, error, time_created FROM saga_node_event
		WHERE saga_id = $1 ORDER BY time_created, node_name, event_type`, id.String())
}
