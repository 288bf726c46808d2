package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// History is what a rack that has run for a while keeps of its past (SPEC
// N14): ended VMMs, resolved migrations and finished sagas, for the
// benchmark and the tests of pruning to insert in bulk.
type History struct {
	Project uuid.UUID
	// Sleds the ended VMMs were on, in turn.
	Sleds []uuid.UUID
	// VMMs ended (destroyed, failed, saga_unwound in turn), each of a
	// deleted instance of its own.
	VMMs int
	// Migrations resolved, each between two of those VMMs (at most
	// VMMs/2), of the source's instance.
	Migrations int
	// Sagas finished (done, unwound in turn), each with EventsPerSaga
	// node events.
	Sagas, EventsPerSaga int
	// Ended is when all of it ended; it began an hour before.
	Ended time.Time
	// NamePrefix makes the deleted instances' names unique across calls.
	NamePrefix string
}

// HistoryIDs are the ids InsertHistory gave what it inserted.
type HistoryIDs struct {
	Instances, VMMs, Migrations, Sagas []uuid.UUID
}

// historyRowsPerStatement bounds a multi-row INSERT's parameters below
// both engines' limits (PostgreSQL 65,535, SQLite 32,766).
const historyParamsPerStatement = 8000

// InsertHistory inserts h with multi-row INSERTs in one transaction, then
// (PostgreSQL) refreshes the planner's statistics as autovacuum would.
func (d *DataStore) InsertHistory(ctx context.Context, h History) (HistoryIDs, error) {
	var ids HistoryIDs
	began, ended := ts(h.Ended.Add(-time.Hour)), ts(h.Ended)
	vmmStates := []string{"destroyed", "failed", "saga_unwound"}
	var instances, vmms, migrations, sagas, events [][]any
	for i := range h.VMMs {
		inst, vmm := uuid.New(), uuid.New()
		ids.Instances, ids.VMMs = append(ids.Instances, inst), append(ids.VMMs, vmm)
		name := fmt.Sprintf("%shist-%d", h.NamePrefix, i)
		instances = append(instances, []any{inst.String(), h.Project.String(), name, "", name, 1, 1 << 30,
			"destroyed", 3, ended, "destroyed", "never", began, ended, ended})
		var reason any
		if vmmStates[i%3] == "failed" {
			reason = "no_such_vmm"
		}
		vmms = append(vmms, []any{vmm.String(), inst.String(), h.Sleds[i%len(h.Sleds)].String(), vmmStates[i%3],
			reason, 4, ended, began})
	}
	for i := 0; i < h.Migrations && 2*i+1 < len(ids.VMMs); i++ {
		m := uuid.New()
		ids.Migrations = append(ids.Migrations, m)
		state := []string{"completed", "failed"}[i%2]
		migrations = append(migrations, []any{m.String(), ids.Instances[2*i].String(), ids.VMMs[2*i].String(),
			ids.VMMs[2*i+1].String(), state, 3, ended, state, 3, ended, began})
	}
	for i := range h.Sagas {
		s := uuid.New()
		ids.Sagas = append(ids.Sagas, s)
		sagas = append(sagas, []any{s.String(), "instance_start", `{}`, uuid.NewString(),
			[]string{"done", "unwound"}[i%2], began, ended})
		for e := range h.EventsPerSaga {
			events = append(events, []any{s.String(), fmt.Sprintf("node_%d", e/2),
				[]string{"started", "succeeded"}[e%2], ended})
		}
	}
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		for _, t := range []struct {
			head string
			rows [][]any
		}{
			{`INSERT INTO instance (id, project_id, name, description, hostname, ncpus, memory_bytes, state,
				state_generation, time_state_updated, intended_state, auto_restart_policy, time_created, time_modified,
				time_deleted)`, instances},
			{`INSERT INTO vmm (id, instance_id, sled_id, state, failure_reason, state_generation, time_state_updated,
				time_created)`, vmms},
			{`INSERT INTO migration (id, instance_id, source_propolis_id, target_propolis_id, source_state, source_gen,
				time_source_updated, target_state, target_gen, time_target_updated, time_created)`, migrations},
			{`INSERT INTO saga (id, template_name, params, owner_nexus_id, state, time_created, time_state_changed)`, sagas},
			{`INSERT INTO saga_node_event (saga_id, node_name, event_type, time_created)`, events},
		} {
			if err := insertRows(ctx, tx, t.head, t.rows); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && d.backend == Postgres {
		_, err = d.db.ExecContext(ctx, `ANALYZE`)
	}
	return ids, err
}

// insertRows inserts rows with as few multi-row INSERTs as the parameter
// limits allow.
func insertRows(ctx context.Context, tx *sql.Tx, head string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	width := len(rows[0])
	per := historyParamsPerStatement / width
	for start := 0; start < len(rows); start += per {
		chunk := rows[start:min(start+per, len(rows))]
		var q strings.Builder
		q.WriteString(head + " VALUES ")
		args := make([]any, 0, len(chunk)*width)
		for r, row := range chunk {
			if r > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(")
			for c := range row {
				if c > 0 {
					q.WriteString(", ")
				}
				fmt.Fprintf(&q, "$%d", len(args)+c+1)
			}
			q.WriteString(")")
			args = append(args, row...)
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("inserting history: %w", err)
		}
	}
	return nil
}

// RowExists says whether table has a row with id.
func (d *DataStore) RowExists(ctx context.Context, table string, id uuid.UUID) (bool, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT count(*) FROM `+table+` WHERE id = $1`, id.String()).Scan(&n)
	return n > 0, err
}

// CountRows counts table's rows.
func (d *DataStore) CountRows(ctx context.Context, table string) (int, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT count(*) FROM `+table).Scan(&n)
	return n, err
}

// Analyze refreshes the planner's statistics, as autovacuum does.
func (d *DataStore) Analyze(ctx context.Context) error {
	_, err := d.db.ExecContext(ctx, `ANALYZE`)
	return err
}

// Explain runs query with args under EXPLAIN (ANALYZE, FORMAT JSON) on
// PostgreSQL and returns the plan's JSON; on SQLite it returns the lines
// of EXPLAIN QUERY PLAN, one per access.
func (d *DataStore) Explain(ctx context.Context, query string, args ...any) ([]string, error) {
	if d.backend == Postgres {
		var plan string
		err := d.db.QueryRowContext(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+query, args...).Scan(&plan)
		return []string{plan}, err
	}
	return queryAll(ctx, d.db, func(row rowScanner) (string, error) {
		var (
			id, parent, unused int
			detail             string
		)
		err := row.Scan(&id, &parent, &unused, &detail)
		return detail, err
	}, `EXPLAIN QUERY PLAN `+query, args...)
}

// SetPruneBatches makes PruneHistory's batches as small as given until the
// test ends, so that a small history takes many batches.
func SetPruneBatches(t testing.TB, rows, sagas int) {
	was, wasSagas := pruneBatch, pruneSagaBatch
	pruneBatch, pruneSagaBatch = rows, sagas
	t.Cleanup(func() { pruneBatch, pruneSagaBatch = was, wasSagas })
}
