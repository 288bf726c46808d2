package datastore

import (
	"context"

	"github.com/google/uuid"
)

// HoldSharedStatements takes every slot of the PostgreSQL gatherers, so
// that the calls made until release queue up and then share statements.
// waiting says how many calls are queued. Call it while nothing is in
// flight.
func (d *DataStore) HoldSharedStatements() (waiting func() int, release func()) {
	d.wishes.hold()
	d.settles.hold()
	return func() int { return d.wishes.waiting() + d.settles.waiting() },
		func() {
			d.wishes.release()
			d.settles.release()
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
