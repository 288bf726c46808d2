package datastore

import (
	"context"
	"database/sql"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// HoldSharedStatements takes every slot of the PostgreSQL gatherers, so
// that the calls made until release queue up and then share statements.
// waiting says how many calls are queued; release may be called more than
// once. Call it while nothing is in flight.
func (d *DataStore) HoldSharedStatements() (waiting func() int, release func()) {
	d.wishes.hold()
	d.settles.hold()
	var once sync.Once
	return func() int { return d.wishes.waiting() + d.settles.waiting() },
		func() {
			once.Do(func() {
				d.wishes.release()
				d.settles.release()
			})
		}
}

// RowWriter is the transaction that last wrote the row of table with id
// (its xmin): rows written by one statement share it.
func (d *DataStore) RowWriter(ctx context.Context, table string, id uuid.UUID) (string, error) {
	var xmin string
	err := d.db.QueryRowContext(ctx, `SELECT xmin::text FROM `+table+` WHERE id = $1`, id.String()).Scan(&xmin)
	return xmin, err
}

func (g *gatherer[Req, Res]) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight += g.slots
}

func (g *gatherer[Req, Res]) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// release gives back the held slots but one, which drains the queue.
func (g *gatherer[Req, Res]) release() {
	g.mu.Lock()
	g.inFlight -= g.slots - 1
	g.mu.Unlock()
	g.handOff()
}

// ClaimsAtExpunge is what a replica held when its expunge committed, read
// inside the expunging transaction: every saga it owned, and every
// instance whose updater lock is held or whose automatic restart was
// claimed, whoever holds them.
type ClaimsAtExpunge struct {
	Sagas, Locked, Restarted map[uuid.UUID]bool
}

// ZoneExpungeReadingClaims is ZoneExpunge, reading within its transaction
// what replica held at its commit.
func (d *DataStore) ZoneExpungeReadingClaims(ctx context.Context, sled, zone, replica uuid.UUID, at time.Time) (ClaimsAtExpunge, error) {
	c := ClaimsAtExpunge{Sagas: map[uuid.UUID]bool{}, Locked: map[uuid.UUID]bool{}, Restarted: map[uuid.UUID]bool{}}
	_, _, err := d.zoneExpunge(ctx, sled, zone, at, func(tx *sql.Tx) error {
		for query, into := range map[string]map[uuid.UUID]bool{
			`SELECT id FROM saga WHERE owner_nexus_id = '` + replica.String() + `'`: c.Sagas,
			`SELECT id FROM instance WHERE updater_id IS NOT NULL`:                  c.Locked,
			`SELECT id FROM instance WHERE time_last_auto_restarted IS NOT NULL`:    c.Restarted,
		} {
			ids, err := queryAll(ctx, tx, func(row rowScanner) (uuid.UUID, error) {
				var id string
				err := row.Scan(&id)
				return uuid.MustParse(id), err
			}, query)
			if err != nil {
				return err
			}
			for _, id := range ids {
				into[id] = true
			}
		}
		return nil
	})
	return c, err
}

// ZoneExpungeBeforeCommit is ZoneExpunge, calling beforeCommit once its
// writes are made and before they commit.
func (d *DataStore) ZoneExpungeBeforeCommit(ctx context.Context, sled, zone uuid.UUID, at time.Time, beforeCommit func()) (model.ZoneRecord, bool, error) {
	return d.zoneExpunge(ctx, sled, zone, at, func(*sql.Tx) error {
		beforeCommit()
		return nil
	})
}

// HotQuery is the SQL of a hot path SPEC N14 bounds, with arguments for it.
type HotQuery struct {
	Name, SQL string
	Args      []any
}

// HotQueries are the queries of placement (on any sled, on one sled) and
// of the instance watcher, with arguments placing a small VMM on sled
// among sleds seen since liveAfter.
func (d *DataStore) HotQueries(sled uuid.UUID, liveAfter time.Time) []HotQuery {
	placement, placementArgs := d.placementQuery(liveAfter, 1, 1)
	return []HotQuery{
		{"placement", placement, placementArgs},
		{"placement on a sled", sledRoomQuery, []any{sled.String(), ts(liveAfter), 1, 1}},
		{"instance watcher", activeVMMsQuery, nil},
	}
}

// OnHeartbeatWrite calls f as each batch of heartbeats begins its write.
func (d *DataStore) OnHeartbeatWrite(f func()) {
	d.heartbeats.mu.Lock()
	defer d.heartbeats.mu.Unlock()
	d.heartbeats.beforeWrite = f
}

// Heard is when this replica last heard sled's heartbeat (zero: never).
func (d *DataStore) Heard(sled uuid.UUID) time.Time {
	d.heartbeats.mu.Lock()
	defer d.heartbeats.mu.Unlock()
	return d.heartbeats.heard[sled]
}

// PlacementLock is the advisory lock placements take on PostgreSQL.
const PlacementLock = int64(placementLock)
