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

// RackSetUp records a rack's plan (Z11) in one transaction: the rack, each
// sled's first zones config, and a replica per nexus zone (X2). It reports
// whether this call recorded it: a rack set up already with the same
// replicas is left as it is (nexus owns the zones configs from its setup
// on), and one set up with other replicas is model.ErrConflict.
func (d *DataStore) RackSetUp(ctx context.Context, rack uuid.UUID, plan model.RackPlan, at time.Time) (bool, error) {
	recorded := false
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var since dbTime
		err := tx.QueryRowContext(ctx, `SELECT time_initialized FROM rack LIMIT 1`).Scan(&since)
		if err == nil {
			return samePlan(ctx, tx, plan, since.Time)
		}
		if !isNoRows(err) {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO rack (id, time_initialized) VALUES ($1, $2)`,
			rack.String(), ts(at)); err != nil {
			return err
		}
		for _, s := range plan.Sleds {
			zones, err := json.Marshal(s.Zones)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO sled_zones (sled_id, generation, zones, time_modified)
				VALUES ($1, $2, $3, $4)`, s.SledID.String(), int64(s.Generation), string(zones), ts(at)); err != nil {
				return err
			}
		}
		for _, n := range plan.NexusZones(at) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO nexus_zone (id, sled_id, internal_address, external_address,
				state, time_created, time_modified) VALUES ($1, $2, $3, $4, $5, $6, $6)`,
				n.ID.String(), n.SledID.String(), n.InternalAddress, n.ExternalAddress, string(n.State), ts(at)); err != nil {
				return err
			}
		}
		recorded = true
		return nil
	})
	return recorded, err
}

// samePlan checks a plan against the rack recorded already: the same
// replicas on the same sleds.
func samePlan(ctx context.Context, q queryer, plan model.RackPlan, since time.Time) error {
	have, err := queryAll(ctx, q, scanNexusZone, `SELECT `+nexusZoneColumns+` FROM nexus_zone ORDER BY id`)
	if err != nil {
		return err
	}
	want := plan.NexusZones(time.Time{})
	slices.SortFunc(want, func(a, b model.NexusZone) int { return compareIDs(a.ID, b.ID) })
	same := len(have) == len(want)
	for i := 0; same && i < len(want); i++ {
		same = have[i].ID == want[i].ID && have[i].SledID == want[i].SledID && have[i].InternalAddress == want[i].InternalAddress
	}
	if !same {
		return fmt.Errorf("%w: the rack was set up at %s with other nexus replicas", model.ErrConflict, since.Format(time.RFC3339))
	}
	return nil
}

const nexusZoneColumns = `id, sled_id, internal_address, external_address, state, time_created`

func scanNexusZone(row rowScanner) (model.NexusZone, error) {
	var (
		n           model.NexusZone
		id, sled    string
		state       string
		timeCreated dbTime
	)
	if err := row.Scan(&id, &sled, &n.InternalAddress, &n.ExternalAddress, &state, &timeCreated); err != nil {
		return n, err
	}
	var err error
	if n.ID, err = uuid.Parse(id); err != nil {
		return n, err
	}
	if n.SledID, err = uuid.Parse(sled); err != nil {
		return n, err
	}
	n.State, n.TimeCreated = model.NexusZoneState(state), timeCreated.Time
	return n, nil
}

// NexusZoneList returns every nexus replica, by id.
func (d *DataStore) NexusZoneList(ctx context.Context) ([]model.NexusZone, error) {
	return list(ctx, d, scanNexusZone, `SELECT `+nexusZoneColumns+` FROM nexus_zone ORDER BY id`)
}

// SledZonesGet returns the zones config nexus wants a sled to run.
func (d *DataStore) SledZonesGet(ctx context.Context, sled uuid.UUID) (model.SledZones, error) {
	var (
		s     = model.SledZones{SledID: sled}
		gen   int64
		zones string
		at    dbTime
	)
	err := d.db.QueryRowContext(ctx, `SELECT generation, zones, time_modified FROM sled_zones WHERE sled_id = $1`,
		sled.String()).Scan(&gen, &zones, &at)
	if isNoRows(err) {
		return s, fmt.Errorf("%w: no zones config for sled %s", model.ErrNotFound, sled)
	}
	if err != nil {
		return s, d.classify(err)
	}
	s.Generation, s.TimeModified = uint64(gen), at.Time
	return s, json.Unmarshal([]byte(zones), &s.Zones)
}
