package datastore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
)

// RackSetUp records a rack's plan (Z11) in one transaction: the rack and
// its plan, each sled's first zones config, and a replica per nexus zone
// (X2). rack names the rack; uuid.Nil takes the recorded one, or a new
// one. It reports whether this call recorded it: a rack set up already
// from the same plan is left as it is (nexus owns the zones configs from
// its setup on). One set up from another plan is model.ErrConflict saying
// what differs, unless no sled ever took a config of it (a plan a sled
// refused, say): nothing of it ran, and the new plan replaces it. Of two
// setups racing on an empty database, one records its plan and the other
// then compares its own with it.
func (d *DataStore) RackSetUp(ctx context.Context, rack uuid.UUID, plan model.RackPlan, at time.Time) (bool, error) {
	plan = plan.Sorted()
	planJSON, err := json.Marshal(plan)
	if err != nil {
		return false, err
	}
	for attempt := 0; ; attempt++ {
		recorded, err := d.rackSetUp(ctx, rack, plan, string(planJSON), at)
		if errors.Is(err, model.ErrAlreadyExists) && attempt == 0 {
			continue // the other setup won the race: compare with its plan
		}
		return recorded, err
	}
}

func (d *DataStore) rackSetUp(ctx context.Context, rack uuid.UUID, plan model.RackPlan, planJSON string, at time.Time) (bool, error) {
	recorded := false
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var (
			since                dbTime
			recordedRack, record string
		)
		err := tx.QueryRowContext(ctx, `SELECT id, plan, time_initialized FROM rack`).Scan(&recordedRack, &record, &since)
		switch {
		case isNoRows(err):
		case err != nil:
			return err
		case rack != uuid.Nil && rack.String() != recordedRack:
			return fmt.Errorf("%w: the rack was set up at %s as rack %s, not %s", model.ErrConflict,
				since.Time.Format(time.RFC3339), recordedRack, rack)
		default:
			differs := samePlan(record, plan, since.Time)
			if differs == nil {
				return nil
			}
			var accepted int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sled_zones WHERE pushed_generation IS NOT NULL`).Scan(&accepted); err != nil {
				return err
			}
			if accepted > 0 {
				return differs
			}
			if err := forgetPlan(ctx, tx); err != nil {
				return err
			}
			rack = uuid.MustParse(recordedRack)
		}
		if rack == uuid.Nil {
			rack = uuid.New()
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO rack (id, plan, time_initialized) VALUES ($1, $2, $3)`,
			rack.String(), planJSON, ts(at)); err != nil {
			return err
		}
		for _, s := range plan.Sleds {
			if _, err := tx.ExecContext(ctx, `INSERT INTO sled_zones (sled_id, generation, time_modified) VALUES ($1, $2, $3)`,
				s.SledID.String(), int64(s.Generation), ts(at)); err != nil {
				return err
			}
			for _, z := range s.Zones {
				if err := insertZone(ctx, tx, s.SledID, z, at); err != nil {
					return err
				}
			}
		}
		for _, n := range plan.NexusZones(at) {
			if err := placeReplica(ctx, tx, n); err != nil {
				return err
			}
		}
		recorded = true
		return nil
	})
	return recorded, err
}

// placeReplica records a replica of the plan as the zone it is. One that
// started before the rack was set up recorded itself on no sled: it is
// that zone now. One already placed elsewhere is a conflict.
func placeReplica(ctx context.Context, tx *sql.Tx, n model.NexusZone) error {
	res, err := tx.ExecContext(ctx, `INSERT INTO nexus_zone (id, sled_id, internal_address, external_address,
			state, time_created, time_modified) VALUES ($1, $2, $3, $4, $5, $6, $6)
		ON CONFLICT (id) DO UPDATE SET sled_id = excluded.sled_id, internal_address = excluded.internal_address,
			external_address = excluded.external_address, time_modified = excluded.time_modified
		WHERE nexus_zone.sled_id IS NULL`,
		n.ID.String(), n.SledID.String(), n.InternalAddress, n.ExternalAddress, string(n.State), ts(n.TimeCreated))
	if err != nil {
		return err
	}
	if placed, err := res.RowsAffected(); err != nil || placed == 1 {
		return err
	}
	return fmt.Errorf("%w: nexus replica %s is a zone of another sled already", model.ErrConflict, n.ID)
}

// forgetPlan removes a recorded plan no sled ever took, and what it made:
// the configs, the zones and the replicas that were zones. A replica
// started by hand (no sled) is no part of it.
func forgetPlan(ctx context.Context, tx *sql.Tx) error {
	for _, stmt := range []string{`DELETE FROM sled_zone`, `DELETE FROM sled_zones`,
		`DELETE FROM nexus_zone WHERE sled_id IS NOT NULL`, `DELETE FROM rack`} {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
}

// samePlan checks a plan against the one the rack was set up from, and
// says what differs.
func samePlan(recordedJSON string, plan model.RackPlan, since time.Time) error {
	var recorded model.RackPlan
	if err := json.Unmarshal([]byte(recordedJSON), &recorded); err != nil {
		return fmt.Errorf("reading the recorded rack plan: %w", err)
	}
	if diff := recorded.Diff(plan); diff != "" {
		return fmt.Errorf("%w: the rack was set up at %s from another plan (%s); a rack is set up once, "+
			"and its zones change through nexus from then on", model.ErrConflict, since.Format(time.RFC3339), diff)
	}
	return nil
}
