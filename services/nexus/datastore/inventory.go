package datastore

import (
	"context"
	"database/sql"
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
)

// InventoryRecord keeps a sled's inventory as its latest (Z9), and in the
// same transaction marks confirmed gone every zone of that sled expunged
// at a generation its last reconciliation reached and absent from it. A
// zone once confirmed gone stays so: its sled will never run it again. It
// returns the zones this inventory confirmed.
func (d *DataStore) InventoryRecord(ctx context.Context, inv model.SledInventory) ([]uuid.UUID, error) {
	zones, err := json.Marshal(inv.Zones)
	if err != nil {
		return nil, err
	}
	vmms, err := json.Marshal(inv.VMMs)
	if err != nil {
		return nil, err
	}
	var confirmed []uuid.UUID
	err = d.inTx(ctx, func(tx *sql.Tx) error {
		// An older collection (a slow one finishing late) never replaces
		// a newer one.
		if _, err := tx.ExecContext(ctx, `INSERT INTO sled_inventory (sled_id, time_collected, ledgered_generation,
				reconciled_generation, reconciler, zones, vmms) VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (sled_id) DO UPDATE SET time_collected = excluded.time_collected,
				ledgered_generation = excluded.ledgered_generation, reconciled_generation = excluded.reconciled_generation,
				reconciler = excluded.reconciler, zones = excluded.zones, vmms = excluded.vmms
			WHERE sled_inventory.time_collected <= excluded.time_collected`,
			inv.SledID.String(), ts(inv.TimeCollected), generationOrNil(inv.LedgeredGeneration),
			generationOrNil(inv.ReconciledGeneration), inv.Reconciler, string(zones), string(vmms)); err != nil {
			return err
		}
		expunged, err := queryAll(ctx, tx, scanZone, `SELECT `+zoneColumns+` FROM sled_zone
			WHERE sled_id = $1 AND disposition = 'expunged' AND time_confirmed_gone IS NULL`, inv.SledID.String())
		if err != nil {
			return err
		}
		for _, z := range expunged {
			if !inv.ProvesGone(z.ID, z.ExpungedGeneration) {
				continue
			}
			if _, err := tx.ExecContext(ctx, `UPDATE sled_zone SET time_confirmed_gone = $2
				WHERE id = $1 AND time_confirmed_gone IS NULL`, z.ID.String(), ts(inv.TimeCollected)); err != nil {
				return err
			}
			confirmed = append(confirmed, z.ID)
		}
		return nil
	})
	return confirmed, err
}

func generationOrNil(g uint64) any {
	if g == 0 {
		return nil
	}
	return int64(g)
}

const inventoryColumns = `sled_id, time_collected, ledgered_generation, reconciled_generation, reconciler, zones, vmms`

func scanInventory(row rowScanner) (model.SledInventory, error) {
	var (
		inv                model.SledInventory
		sled, zones, vmms  string
		collected          dbTime
		ledgered, reconcil *int64
	)
	if err := row.Scan(&sled, &collected, &ledgered, &reconcil, &inv.Reconciler, &zones, &vmms); err != nil {
		return inv, err
	}
	inv.SledID, inv.TimeCollected = uuid.MustParse(sled), collected.Time
	if ledgered != nil {
		inv.LedgeredGeneration = uint64(*ledgered)
	}
	if reconcil != nil {
		inv.ReconciledGeneration = uint64(*reconcil)
	}
	if err := json.Unmarshal([]byte(zones), &inv.Zones); err != nil {
		return inv, err
	}
	return inv, json.Unmarshal([]byte(vmms), &inv.VMMs)
}

func inventoryGet(ctx context.Context, q queryer, sled uuid.UUID) (model.SledInventory, error) {
	return scanInventory(q.QueryRowContext(ctx, `SELECT `+inventoryColumns+` FROM sled_inventory WHERE sled_id = $1`, sled.String()))
}

// InventoryList returns the latest inventory of every sled, by sled.
func (d *DataStore) InventoryList(ctx context.Context) ([]model.SledInventory, error) {
	return list(ctx, d, scanInventory, `SELECT `+inventoryColumns+` FROM sled_inventory ORDER BY sled_id`)
}

// InventoryAges returns, per sled, when its latest inventory was
// collected (X7).
func (d *DataStore) InventoryAges(ctx context.Context) (map[uuid.UUID]time.Time, error) {
	out := map[uuid.UUID]time.Time{}
	rows, err := d.db.QueryContext(ctx, `SELECT sled_id, time_collected FROM sled_inventory`)
	if err != nil {
		return nil, d.classify(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			sled string
			at   dbTime
		)
		if err := rows.Scan(&sled, &at); err != nil {
			return nil, err
		}
		out[uuid.MustParse(sled)] = at.Time
	}
	return out, d.classify(rows.Err())
}
