package datastore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// ProjectScope is where a caller may act: every project, or these.
type ProjectScope struct {
	All      bool
	Projects []uuid.UUID
}

// InstanceIntendStopped records that the instance must stop (as
// InstanceSetIntendedState does) and returns what it runs now: what
// force-terminate acts on (F2, F3). The wish is only written to an instance
// in scope, checked by the same statement, so authorizing it costs no
// lookup; an instance out of scope is model.ErrNotFound and nothing is written.
// On PostgreSQL the wish and the instance and VMMs it returns are one
// statement, shared by the wishes made at the same time (see gatherer); on
// SQLite the VMMs are read just after, which is as good, since whatever
// links a VMM later is looked at again by the caller.
func (d *DataStore) InstanceIntendStopped(ctx context.Context, id uuid.UUID, scope ProjectScope, at time.Time) (model.InstanceSnapshot, error) {
	if !scope.All && len(scope.Projects) == 0 {
		return model.InstanceSnapshot{}, fmt.Errorf("%w: instance %s", model.ErrNotFound, id)
	}
	w := stopWish{id: id, scope: scope, at: at}
	var (
		s   *model.InstanceSnapshot
		err error
	)
	if d.wishes != nil {
		s, err = d.wishes.do(ctx, w)
	} else {
		s, err = d.stopWishAlone(ctx, w)
	}
	if err != nil {
		return model.InstanceSnapshot{}, err
	}
	if s == nil {
		return model.InstanceSnapshot{}, fmt.Errorf("%w: instance %s", model.ErrNotFound, id)
	}
	return *s, nil
}

// stopWishAlone writes one wish: on PostgreSQL, its UPDATE … RETURNING
// joined with the VMMs the instance points at (one row per linked VMM, one
// with NULLs when none is); on SQLite, the UPDATE, then a read of the VMMs.
// It is nil when the wish wrote nothing.
func (d *DataStore) stopWishAlone(ctx context.Context, w stopWish) (*model.InstanceSnapshot, error) {
	update := `UPDATE instance SET intended_state = 'stopped', time_modified = $2
		WHERE id = $1 AND time_deleted IS NULL`
	args := []any{w.id.String(), ts(w.at)}
	if !w.scope.All {
		marks := make([]string, len(w.scope.Projects))
		for i, p := range w.scope.Projects {
			args = append(args, p.String())
			marks[i] = fmt.Sprintf("$%d", len(args))
		}
		update += ` AND project_id IN (` + strings.Join(marks, ", ") + `)`
	}
	update += ` RETURNING ` + instanceColumns
	if d.backend != Postgres {
		inst, err := scanInstance(d.db.QueryRowContext(ctx, update, args...))
		if isNoRows(err) {
			return nil, nil
		}
		if err != nil {
			return nil, d.classify(err)
		}
		s, err := linked(ctx, d.db, inst)
		return &s, d.classify(err)
	}
	rows, err := d.db.QueryContext(ctx, `WITH i AS (`+update+`)
		SELECT i.*, `+joinedVMMColumns+`
		FROM i LEFT JOIN vmm v ON v.id IN (i.active_propolis_id, i.target_propolis_id)`, args...)
	if err != nil {
		return nil, d.classify(err)
	}
	snaps, err := scanJoinedWishes(rows, 1, false)
	if err != nil {
		return nil, d.classify(err)
	}
	return snaps[0], d.classify(readMigrations(ctx, d.db, snaps))
}

// stopWish is one InstanceIntendStopped waiting to share a statement.
type stopWish struct {
	id    uuid.UUID
	scope ProjectScope
	at    time.Time
}

// stopWishesStatement writes two or more wishes as one statement: an
// UPDATE … RETURNING of every instance in its caller's scope whose row no
// other transaction holds, joined with the VMMs each points at. A wish it
// wrote nothing for is answered nil: the instance is missing, out of
// scope, or its row was held, and the wish is made again alone (see
// gatherer), which says which.
func (d *DataStore) stopWishesStatement(ctx context.Context, wishes []stopWish) ([]*model.InstanceSnapshot, error) {
	var (
		nth, scopeNth          []int32
		ids, ats, scopeProject []string
		everywhere             []bool
	)
	for i, w := range wishes {
		nth = append(nth, int32(i))
		ids = append(ids, w.id.String())
		ats = append(ats, ts(w.at))
		everywhere = append(everywhere, w.scope.All)
		for _, p := range w.scope.Projects {
			scopeNth = append(scopeNth, int32(i))
			scopeProject = append(scopeProject, p.String())
		}
	}
	rows, err := d.db.QueryContext(ctx, `
		WITH w AS (
			SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::bool[]) AS w(nth, id, at, everywhere)
		), free AS (
			SELECT instance.id FROM instance JOIN w ON instance.id = w.id
			WHERE instance.time_deleted IS NULL
				AND (w.everywhere OR instance.project_id IN (
					SELECT s.project_id FROM unnest($5::int[], $6::text[]) AS s(nth, project_id) WHERE s.nth = w.nth))
			FOR NO KEY UPDATE OF instance SKIP LOCKED
		), i AS (
			UPDATE instance SET intended_state = 'stopped', time_modified = w.at::timestamptz
			FROM w
			WHERE instance.id = w.id AND instance.id IN (SELECT id FROM free)
			RETURNING w.nth, `+qualified("instance", instanceColumns)+`
		)
		SELECT i.*, `+joinedVMMColumns+`
		FROM i LEFT JOIN vmm v ON v.id IN (i.active_propolis_id, i.target_propolis_id)`,
		nth, ids, ats, everywhere, scopeNth, scopeProject)
	if err != nil {
		return nil, d.classify(err)
	}
	snaps, err := scanJoinedWishes(rows, len(wishes), true)
	if err != nil {
		return nil, d.classify(err)
	}
	return snaps, d.classify(readMigrations(ctx, d.db, snaps))
}
