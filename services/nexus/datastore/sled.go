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

// SledsSeen records heartbeats of sleds, each at the time it was heard,
// in one statement, and returns those it does not know (never registered,
// or deleted: each agent then registers again). A sled's last-seen time
// never goes back, should two replicas' clocks disagree.
func (d *DataStore) SledsSeen(ctx context.Context, heard map[uuid.UUID]time.Time) (unknown []uuid.UUID, err error) {
	ids, times := make([]string, 0, len(heard)), make([]string, 0, len(heard))
	for id, at := range heard {
		ids, times = append(ids, id.String()), append(times, ts(at))
	}
	var seen []uuid.UUID
	if d.backend == Postgres {
		seen, err = d.ids(ctx, `UPDATE sled SET time_last_seen = GREATEST(time_last_seen, h.at::timestamptz)
			FROM unnest($1::text[], $2::text[]) AS h(id, at)
			WHERE sled.id = h.id AND sled.time_deleted IS NULL
			RETURNING sled.id`, ids, times)
	} else {
		pairs := make([][2]string, len(ids))
		for i := range ids {
			pairs[i] = [2]string{ids[i], times[i]}
		}
		encoded, _ := json.Marshal(pairs) // strings always encode
		seen, err = d.ids(ctx, `UPDATE sled SET time_last_seen = MAX(time_last_seen, h.at)
			FROM (SELECT value->>0 AS id, value->>1 AS at FROM json_each($1)) AS h
			WHERE sled.id = h.id AND sled.time_deleted IS NULL
			RETURNING sled.id`, string(encoded))
	}
	if err != nil {
		return nil, err
	}
	known := make(map[uuid.UUID]bool, len(seen))
	for _, id := range seen {
		known[id] = true
	}
	for id := range heard {
		if !known[id] {
			unknown = append(unknown, id)
		}
	}
	return unknown, nil
}

// SledsLastSeen returns when each of the live sleds among ids last
// heartbeated, as SledListPage has it.
func (d *DataStore) SledsLastSeen(ctx context.Context, sleds []uuid.UUID) (map[uuid.UUID]time.Time, error) {
	out := make(map[uuid.UUID]time.Time, len(sleds))
	if len(sleds) == 0 {
		return out, nil
	}
	among, arg := d.idList("id", "$1", sleds)
	type seen struct {
		id uuid.UUID
		at time.Time
	}
	rows, err := list(ctx, d, func(row rowScanner) (seen, error) {
		var (
			id string
			at dbTime
		)
		if err := row.Scan(&id, &at); err != nil {
			return seen{}, err
		}
		return seen{uuid.MustParse(id), at.Time}, nil
	}, `SELECT id, time_last_seen FROM sled WHERE time_deleted IS NULL AND `+among, arg)
	for _, r := range rows {
		out[r.id] = d.heartbeats.seen(r.id, r.at)
	}
	return out, err
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
	s.TimeLastSeen = d.heartbeats.seen(s.ID, s.TimeLastSeen)
	return s, d.classify(err)
}

// SledList returns every live sled in id order.
func (d *DataStore) SledList(ctx context.Context) ([]model.Sled, error) {
	return d.SledListPage(ctx, "", math.MaxInt32)
}

// SledListPage returns up to limit live sleds in id order after the given
// id. A sled's last-seen time is the later of the database's and the last
// heartbeat this replica heard (see heartbeats).
func (d *DataStore) SledListPage(ctx context.Context, after string, limit int) ([]model.Sled, error) {
	sleds, err := list(ctx, d, scanSled, `SELECT `+sledColumns+` FROM sled
		WHERE time_deleted IS NULL AND id > $1 ORDER BY id LIMIT $2`, after, limit)
	for i := range sleds {
		sleds[i].TimeLastSeen = d.heartbeats.seen(sleds[i].ID, sleds[i].TimeLastSeen)
	}
	return sleds, err
}

// SledAddresses returns where every live sled's agent listens, in one
// read (sledclient's address book).
func (d *DataStore) SledAddresses(ctx context.Context) (map[uuid.UUID]string, error) {
	type entry struct {
		id   uuid.UUID
		addr string
	}
	entries, err := list(ctx, d, func(row rowScanner) (entry, error) {
		var (
			e  entry
			id string
		)
		err := row.Scan(&id, &e.addr)
		if err == nil {
			e.id, err = uuid.Parse(id)
		}
		return e, err
	}, `SELECT id, address FROM sled WHERE time_deleted IS NULL`)
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID]string, len(entries))
	for _, e := range entries {
		out[e.id] = e.addr
	}
	return out, nil
}

// SledAddress returns where a live sled's agent listens.
func (d *DataStore) SledAddress(ctx context.Context, id uuid.UUID) (string, error) {
	s, err := d.SledGet(ctx, id)
	return s.Address, err
}
