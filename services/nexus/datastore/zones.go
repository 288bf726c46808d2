package datastore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
)

// The zones nexus owns on each sled (Z9): each sled's config generation in
// sled_zones, each zone in sled_zone.

const zoneColumns = `id, sled_id, kind, pool, address, nexus, disposition, expunged_generation,
	time_created, time_expunged, time_confirmed_gone`

func insertZone(ctx context.Context, tx *sql.Tx, sled uuid.UUID, z model.Zone, at time.Time) error {
	var nexus any
	if z.Nexus != nil {
		data, err := json.Marshal(z.Nexus)
		if err != nil {
			return err
		}
		nexus = string(data)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO sled_zone (id, sled_id, kind, pool, address, nexus, disposition, time_created)
		VALUES ($1, $2, $3, $4, $5, $6, 'in_service', $7)`,
		z.ID.String(), sled.String(), string(z.Kind), z.Pool, z.Address, nexus, ts(at))
	return err
}

func scanZone(row rowScanner) (model.ZoneRecord, error) {
	var (
		z                         model.ZoneRecord
		id, sled, kind, disp      string
		nexus                     *string
		expungedGen               *int64
		created, expunged, goneAt dbTime
	)
	if err := row.Scan(&id, &sled, &kind, &z.Pool, &z.Address, &nexus, &disp, &expungedGen, &created, &expunged, &goneAt); err != nil {
		return z, err
	}
	z.ID, z.SledID, z.Kind, z.Disposition = uuid.MustParse(id), uuid.MustParse(sled), model.ZoneKind(kind), model.ZoneDisposition(disp)
	if nexus != nil {
		z.Nexus = &model.NexusZoneDetails{}
		if err := json.Unmarshal([]byte(*nexus), z.Nexus); err != nil {
			return z, fmt.Errorf("zone %s: %w", id, err)
		}
	}
	if expungedGen != nil {
		z.ExpungedGeneration = uint64(*expungedGen)
	}
	z.TimeCreated, z.TimeExpunged, z.TimeConfirmedGone = created.Time, expunged.Time, goneAt.Time
	return z, nil
}

// SledZonesGet returns the zones config nexus wants a sled to run: its
// generation and in-service zones.
func (d *DataStore) SledZonesGet(ctx context.Context, sled uuid.UUID) (model.SledZones, error) {
	var cfgs []model.SledZones
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		cfgs, err = d.sledZones(ctx, tx, []uuid.UUID{sled})
		return err
	})
	if err == nil && len(cfgs) == 0 {
		err = fmt.Errorf("%w: no zones config for sled %s", model.ErrNotFound, sled)
	}
	if err != nil {
		return model.SledZones{}, err
	}
	return cfgs[0], nil
}

// sledZones reads the zones configs of sleds, in sled id order; a sled
// with none is left out. Generations are read before zones: a zone
// expunged in between is then pushed under the old generation, which the
// sled refuses (Z1) and a later push mends, where the other order could
// ledger a stale zone set under the new generation for good.
func (d *DataStore) sledZones(ctx context.Context, q queryer, sleds []uuid.UUID) ([]model.SledZones, error) {
	inSleds, arg := d.idList("sled_id", "$1", sleds)
	cfgs, err := queryAll(ctx, q, func(row rowScanner) (model.SledZones, error) {
		var (
			s   model.SledZones
			id  string
			gen int64
			at  dbTime
		)
		err := row.Scan(&id, &gen, &at)
		s.SledID, s.Generation, s.TimeModified = uuid.MustParse(id), uint64(gen), at.Time
		return s, err
	}, `SELECT sled_id, generation, time_modified FROM sled_zones WHERE `+inSleds+` ORDER BY sled_id`, arg)
	if err != nil || len(cfgs) == 0 {
		return nil, err
	}
	zones, err := queryAll(ctx, q, scanZone, `SELECT `+zoneColumns+` FROM sled_zone
		WHERE `+inSleds+` AND disposition = 'in_service' ORDER BY id`, arg)
	if err != nil {
		return nil, err
	}
	bySled := make(map[uuid.UUID]int, len(cfgs))
	for i, c := range cfgs {
		bySled[c.SledID] = i
	}
	for _, z := range zones {
		if i, ok := bySled[z.SledID]; ok {
			cfgs[i].Zones = append(cfgs[i].Zones, z.Zone)
		}
	}
	return cfgs, nil
}

// SledZonesToPush returns the zones configs worth pushing (Z9): of every
// sled that may not hold its config (never pushed, pushed an older
// generation, last push failed, or its last inventory shows an older
// ledger or none), and of the 1/refreshPasses of all sleds tried longest
// ago, so that every sled is pushed again within refreshPasses calls, a
// few at a time, without every pass costing every sled two fsynced ledger
// writes. A sled not yet inventoried is not one that may lack its config
// if it took its generation: its answer was durable (Z3). Right after rack
// setup, before the first inventory, the first pass would otherwise push
// every sled again.
func (d *DataStore) SledZonesToPush(ctx context.Context, refreshPasses int) ([]model.SledZones, error) {
	var cfgs []model.SledZones
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		type pushState struct {
			sled  uuid.UUID
			needs bool
		}
		states, err := queryAll(ctx, tx, func(row rowScanner) (pushState, error) {
			var (
				p  pushState
				id string
			)
			err := row.Scan(&id, &p.needs)
			p.sled = uuid.MustParse(id)
			return p, err
		}, `SELECT sz.sled_id,
				sz.pushed_generation IS NULL OR sz.pushed_generation < sz.generation OR sz.push_error IS NOT NULL
				OR (inv.sled_id IS NOT NULL AND (inv.ledgered_generation IS NULL OR inv.ledgered_generation < sz.generation))
			FROM sled_zones sz LEFT JOIN sled_inventory inv ON inv.sled_id = sz.sled_id
			ORDER BY sz.time_push_attempted, sz.sled_id`)
		if err != nil {
			return err
		}
		refresh := (len(states) + refreshPasses - 1) / refreshPasses
		var sleds []uuid.UUID
		for _, p := range states {
			if p.needs || refresh > 0 {
				sleds = append(sleds, p.sled)
			}
			if !p.needs {
				refresh--
			}
		}
		cfgs, err = d.sledZones(ctx, tx, sleds)
		return err
	})
	return cfgs, err
}

// SledZonesPushed records the outcome of a push of generation to a sled:
// err nil when the sled took it. Every push counts as an attempt, which
// orders refresh pushes (SledZonesToPush).
func (d *DataStore) SledZonesPushed(ctx context.Context, sled uuid.UUID, generation uint64, pushErr error, at time.Time) error {
	var err error
	if pushErr == nil {
		_, err = d.db.ExecContext(ctx, `UPDATE sled_zones SET time_push_attempted = $3,
				pushed_generation = CASE WHEN `+newerPush+` THEN $2 ELSE pushed_generation END,
				time_pushed = CASE WHEN `+newerPush+` THEN $3 ELSE time_pushed END,
				push_error = CASE WHEN `+newerPush+` THEN NULL ELSE push_error END
			WHERE sled_id = $1`, sled.String(), int64(generation), ts(at))
	} else {
		// A failed push of a generation the sled has already taken (a
		// replica's late, older push, or a refresh the sled did not
		// answer) says nothing about the sled's config.
		_, err = d.db.ExecContext(ctx, `UPDATE sled_zones SET time_push_attempted = $2,
				time_pushed = CASE WHEN `+untakenPush+` THEN $2 ELSE time_pushed END,
				push_error = CASE WHEN `+untakenPush+` THEN $3 ELSE push_error END
			WHERE sled_id = $1`, sled.String(), ts(at), pushErr.Error(), int64(generation))
	}
	return d.classify(err)
}

// newerPush and untakenPush say of a push of generation $2 (or $4) whether
// it is no older than what the sled took, and whether the sled has not
// taken it.
const (
	newerPush   = `(pushed_generation IS NULL OR pushed_generation <= $2)`
	untakenPush = `(pushed_generation IS NULL OR pushed_generation < $4)`
)

// SledZonesStatus is a sled's zones as nexus sees them: the config it
// wants, how its last push went, every zone it put there (expunged ones
// too), and the sled's last inventory, if any.
type SledZonesStatus struct {
	Generation uint64
	Push       model.ZonesPush
	Zones      []model.ZoneRecord
	Inventory  *model.SledInventory
}

// SledZonesStatusGet returns a sled's zones status; model.ErrNotFound for a
// sled nexus holds no zones config for.
func (d *DataStore) SledZonesStatusGet(ctx context.Context, sled uuid.UUID) (SledZonesStatus, error) {
	var st SledZonesStatus
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var (
			gen       int64
			pushedGen *int64
			pushedAt  dbTime
			pushErr   *string
		)
		err := tx.QueryRowContext(ctx, `SELECT generation, pushed_generation, time_pushed, push_error FROM sled_zones WHERE sled_id = $1`,
			sled.String()).Scan(&gen, &pushedGen, &pushedAt, &pushErr)
		if isNoRows(err) {
			return fmt.Errorf("%w: sled %s has no zones config", model.ErrNotFound, sled)
		}
		if err != nil {
			return err
		}
		st.Generation, st.Push.Time = uint64(gen), pushedAt.Time
		if pushedGen != nil {
			st.Push.Generation = uint64(*pushedGen)
		}
		if pushErr != nil {
			st.Push.Error = *pushErr
		}
		if st.Zones, err = queryAll(ctx, tx, scanZone, `SELECT `+zoneColumns+` FROM sled_zone WHERE sled_id = $1 ORDER BY id`,
			sled.String()); err != nil {
			return err
		}
		inv, err := inventoryGet(ctx, tx, sled)
		if err == nil {
			st.Inventory = &inv
		} else if !isNoRows(err) {
			return err
		}
		return nil
	})
	return st, err
}

// ZoneExpunge takes a zone out of its sled's config for good, in one
// transaction (X3): the sled's generation goes up, the zone is marked
// expunged at that generation, and a nexus zone's replica becomes expunged,
// so that from this commit on it can claim nothing. The push that follows
// is the caller's. Expunging an expunged zone changes nothing; the last
// active replica is model.ErrLastReplica. It returns the zone as it now
// stands, and whether this call expunged it.
func (d *DataStore) ZoneExpunge(ctx context.Context, sled, zone uuid.UUID, at time.Time) (model.ZoneRecord, bool, error) {
	return d.zoneExpunge(ctx, sled, zone, at, nil)
}

// zoneExpunge is ZoneExpunge; within its transaction, after the writes,
// it calls also (tests look there at what the replica held at the commit).
func (d *DataStore) zoneExpunge(ctx context.Context, sled, zone uuid.UUID, at time.Time, also func(*sql.Tx) error) (model.ZoneRecord, bool, error) {
	var (
		rec     model.ZoneRecord
		changed bool
	)
	// On PostgreSQL the zone's row, and for a nexus zone every active
	// replica's, are locked before they are read: two expunges of one zone
	// then expunge it once, and two expunges of the last two replicas
	// cannot each count the other as active. Locks are taken in one order
	// (the zone, then the replicas by id, then the sled's config), and a
	// claim holds only its own replica's row, shared.
	lock := ""
	if d.backend == Postgres {
		lock = " FOR UPDATE"
	}
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		rec, err = scanZone(tx.QueryRowContext(ctx, `SELECT `+zoneColumns+` FROM sled_zone WHERE id = $1 AND sled_id = $2`+lock,
			zone.String(), sled.String()))
		if isNoRows(err) {
			return fmt.Errorf("%w: sled %s has no zone %s", model.ErrNotFound, sled, zone)
		}
		if err != nil || rec.Disposition == model.ZoneExpunged {
			return err
		}
		if rec.Kind == model.ZoneNexus {
			active, err := queryAll(ctx, tx, scanUUID, `SELECT id FROM nexus_zone WHERE state = 'active' ORDER BY id`+lock)
			if err != nil {
				return err
			}
			if others := slices.DeleteFunc(active, func(id uuid.UUID) bool { return id == zone }); len(others) == 0 {
				return fmt.Errorf("%w: nexus %s is the only one", model.ErrLastReplica, zone)
			}
		}
		var gen int64
		if err := tx.QueryRowContext(ctx, `UPDATE sled_zones SET generation = generation + 1, time_modified = $2
			WHERE sled_id = $1 RETURNING generation`, sled.String(), ts(at)).Scan(&gen); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sled_zone SET disposition = 'expunged', expunged_generation = $2, time_expunged = $3
			WHERE id = $1`, zone.String(), gen, ts(at)); err != nil {
			return err
		}
		if rec.Kind == model.ZoneNexus {
			if _, err := tx.ExecContext(ctx, `UPDATE nexus_zone SET state = 'expunged', time_expunged = $2, time_modified = $2
				WHERE id = $1`, zone.String(), ts(at)); err != nil {
				return err
			}
		}
		rec.Disposition, rec.ExpungedGeneration, rec.TimeExpunged = model.ZoneExpunged, uint64(gen), at.UTC().Truncate(time.Microsecond)
		changed = true
		if also != nil {
			return also(tx)
		}
		return nil
	})
	return rec, changed, err
}

// SledsAwaitingConfirmation lists the sleds with an expunged zone not yet
// confirmed gone.
func (d *DataStore) SledsAwaitingConfirmation(ctx context.Context) ([]uuid.UUID, error) {
	return d.ids(ctx, `SELECT DISTINCT sled_id FROM sled_zone
		WHERE disposition = 'expunged' AND time_confirmed_gone IS NULL ORDER BY sled_id`)
}

// ZonesExpungedUnconfirmed counts the zones expunged whose sleds have not
// proved them gone yet (X7).
func (d *DataStore) ZonesExpungedUnconfirmed(ctx context.Context) (int64, error) {
	var n int64
	err := d.db.QueryRowContext(ctx, `SELECT count(*) FROM sled_zone
		WHERE disposition = 'expunged' AND time_confirmed_gone IS NULL`).Scan(&n)
	return n, d.classify(err)
}
