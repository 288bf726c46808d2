package datastore

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// SledUpsert records a sled as it registers (V8): new, or with its address
// and resources refreshed. Either way it was just seen.
func (d *DataStore) SledUpsert(ctx context.Context, s model.Sled) error {
	zpools, err := json.Marshal(s.Zpools)
	if err != nil {
		return err
	}
	now := ts(s.TimeLastSeen)
	_, err = d.db.ExecContext(ctx, `
		INSERT INTO sled (id, address, ncpus, memory_bytes, zpools, time_created, time_modified, time_last_seen)
		VALUES ($1, $2, $3, $4, $5, $6, $6, $6)
		ON CONFLICT (id) DO UPDATE SET address = excluded.address, ncpus = excluded.ncpus,
			memory_bytes = excluded.memory_bytes, zpools = excluded.zpools,
			time_modified = excluded.time_modified, time_last_seen = excluded.time_last_seen,
			time_deleted = NULL`,
		s.ID.String(), s.Address, s.NCPUs, s.MemoryBytes, string(zpools), now)
	return d.classify(err)
}

// SledSeen records a heartbeat; model.ErrNotFound for a sled never registered.
func (d *DataStore) SledSeen(ctx context.Context, id uuid.UUID, at time.Time) error {
	res, err := d.db.ExecContext(ctx, `UPDATE sled SET time_last_seen = $2 WHERE id = $1 AND time_deleted IS NULL`,
		id.String(), ts(at))
	if err != nil {
		return d.classify(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: sled %s", model.ErrNotFound, id)
	}
	return nil
}

const sledColumns = `id, address, ncpus, memory_bytes, zpools, time_created, time_modified, time_last_seen`

func scanSled(row rowScanner) (model.Sled, error) {
	var (
		s                       model.Sled
		id, zpools              string
		created, modified, seen dbTime
	)
	if err := row.Scan(&id, &s.Address, &s.NCPUs, &s.MemoryBytes, &zpools, &created, &modified, &seen); err != nil {
		return model.Sled{}, err
	}
	s.ID = uuid.MustParse(id)
	if err := json.Unmarshal([]byte(zpools), &s.Zpools); err != nil {
		return model.Sled{}, fmt.Errorf("sled %s zpools: %w", id, err)
	}
	s.TimeCreated, s.TimeModified, s.TimeLastSeen = created.Time, modified.Time, seen.Time
	return s, nil
}

// SledGet returns a live sled.
func (d *DataStore) SledGet(ctx context.Context, id uuid.UUID) (model.Sled, error) {
	s, err := scanSled(d.db.QueryRowContext(ctx,
		`SELECT `+sledColumns+` FROM sled WHERE id = $1 AND time_deleted IS NULL`, id.String()))
	if isNoRows(err) {
		return model.Sled{}, fmt.Errorf("%w: sled %s", model.ErrNotFound, id)
	}
	return s, d.classify(err)
}

// SledList returns every live sled in id order.
func (d *DataStore) SledList(ctx context.Context) ([]model.Sled, error) {
	return d.SledListPage(ctx, "", math.MaxInt32)
}

// SledListPage returns up to limit live sleds in id order after the given id.
func (d *DataStore) SledListPage(ctx context.Context, after string, limit int) ([]model.Sled, error) {
	return list(ctx, d, scanSled, `SELECT `+sledColumns+` FROM sled
		WHERE time_deleted IS NULL AND id > $1 ORDER BY id LIMIT $2`, after, limit)
}

// SledAddress returns where a live sled's agent listens.
func (d *DataStore) SledAddress(ctx context.Context, id uuid.UUID) (string, error) {
	s, err := d.SledGet(ctx, id)
	return s.Address, err
}
