package datastore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// joinedVMMColumns are a VMM's columns from a LEFT JOIN of vmm v, led by
// whether there is one.
const joinedVMMColumns = `v.id IS NOT NULL, COALESCE(v.id, ''), COALESCE(v.instance_id, ''), COALESCE(v.sled_id, ''),
	COALESCE(v.state, ''), v.failure_reason, COALESCE(v.state_generation, 0), v.time_state_updated, v.time_created`

// scanJoinedWishes reads the rows of wishes' UPDATEs joined with their
// VMMs: the instance (led by its wish's position when numbered), then a
// joined VMM.
func scanJoinedWishes(rows *sql.Rows, wishes int, numbered bool) ([]*model.InstanceSnapshot, error) {
	defer rows.Close()
	snaps := make([]*model.InstanceSnapshot, wishes)
	for rows.Next() {
		var (
			nth     int32
			present bool
			vr      vmmRow
		)
		inst, err := scanInstance(scanFunc(func(dest ...any) error {
			if numbered {
				dest = append([]any{&nth}, dest...)
			}
			return rows.Scan(append(append(dest, &present), vr.dest()...)...)
		}))
		if err != nil {
			return nil, err
		}
		if snaps[nth] == nil {
			snaps[nth] = &model.InstanceSnapshot{Instance: inst}
		}
		if present {
			snaps[nth].Attach(vr.vmm())
		}
	}
	return snaps, rows.Err()
}

// readMigrations reads the migration of each snapshot that has one: rare
// for an instance being force-terminated, so not worth a join.
func readMigrations(ctx context.Context, q queryer, snaps []*model.InstanceSnapshot) error {
	for _, s := range snaps {
		if s != nil {
			if err := readMigration(ctx, q, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// InstanceSnapshot reads an instance with the VMMs and migration its
// runtime points at.
func (d *DataStore) InstanceSnapshot(ctx context.Context, id uuid.UUID) (model.InstanceSnapshot, error) {
	s, err := snapshot(ctx, d.db, id)
	return s, d.classify(err)
}

func snapshot(ctx context.Context, q queryer, id uuid.UUID) (model.InstanceSnapshot, error) {
	inst, err := scanInstance(q.QueryRowContext(ctx,
		`SELECT `+instanceColumns+` FROM instance WHERE id = $1 AND time_deleted IS NULL`, id.String()))
	if isNoRows(err) {
		return model.InstanceSnapshot{}, fmt.Errorf("%w: instance %s", model.ErrNotFound, id)
	}
	if err != nil {
		return model.InstanceSnapshot{}, err
	}
	return linked(ctx, q, inst)
}

// linked reads the VMMs and migration inst's runtime points at.
func linked(ctx context.Context, q queryer, inst model.Instance) (model.InstanceSnapshot, error) {
	s := model.InstanceSnapshot{Instance: inst}
	rt := inst.Runtime
	if rt.ActiveVMM != nil || rt.TargetVMM != nil {
		vmms, err := queryAll(ctx, q, scanVMM, `SELECT `+vmmColumns+` FROM vmm WHERE id IN ($1, $2)`,
			idOrNil(rt.ActiveVMM), idOrNil(rt.TargetVMM))
		if err != nil {
			return s, err
		}
		for _, v := range vmms {
			s.Attach(v)
		}
	}
	return s, readMigration(ctx, q, &s)
}

// readMigration reads the migration the instance's runtime points at, if
// any.
func readMigration(ctx context.Context, q queryer, s *model.InstanceSnapshot) error {
	id := s.Instance.Runtime.MigrationID
	if id == nil {
		return nil
	}
	m, err := migrationGet(ctx, q, *id)
	if err != nil {
		return err
	}
	s.Migration = &m
	return nil
}
