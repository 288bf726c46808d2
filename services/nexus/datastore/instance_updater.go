package datastore

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// InstanceUpdaterLock takes the instance's updater lock for holder (N6),
// the update saga that runs on replica, only while replica is active (X3):
// true when it now holds it, including when it already did (an idempotent
// saga node re-run after a crash, or by the replica that adopted the
// saga); false when someone else holds it; model.ErrReplicaNotActive when
// the replica may claim nothing.
func (d *DataStore) InstanceUpdaterLock(ctx context.Context, id, holder, replica uuid.UUID) (bool, error) {
	res, err := d.db.ExecContext(ctx, `UPDATE instance SET updater_id = $2, updater_gen = updater_gen + 1
		WHERE id = $1 AND updater_id IS NULL AND time_deleted IS NULL AND `+d.replicaActive("$3"),
		id.String(), holder.String(), replica.String())
	if err != nil {
		return false, d.classify(err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	var (
		current *string
		active  bool
	)
	err = d.db.QueryRowContext(ctx, `SELECT updater_id, `+d.replicaActiveNoLock("$2")+` FROM instance
		WHERE id = $1 AND time_deleted IS NULL`, id.String(), replica.String()).Scan(&current, &active)
	if isNoRows(err) {
		return false, fmt.Errorf("%w: instance %s", model.ErrNotFound, id)
	}
	if err != nil {
		return false, d.classify(err)
	}
	if held := current != nil && *current == holder.String(); held || !active {
		if !held {
			return false, notActive(replica)
		}
		return true, nil
	}
	return false, nil
}

// InstanceUpdaterUnlock releases the lock if holder holds it; releasing a
// lock one does not hold changes nothing.
func (d *DataStore) InstanceUpdaterUnlock(ctx context.Context, id, holder uuid.UUID) error {
	_, err := d.db.ExecContext(ctx, `UPDATE instance SET updater_id = NULL WHERE id = $1 AND updater_id = $2`,
		id.String(), holder.String())
	return d.classify(err)
}

// InstancesNeedingUpdate returns live instances whose active or target VMM
// is terminal, or whose migration either side finished: the work an update
// saga should have done (N8 updater).
func (d *DataStore) InstancesNeedingUpdate(ctx context.Context) ([]uuid.UUID, error) {
	return d.ids(ctx, `SELECT i.id FROM instance i WHERE i.time_deleted IS NULL AND i.state = 'vmm' AND (
			EXISTS (SELECT 1 FROM vmm v WHERE v.id IN (i.active_propolis_id, i.target_propolis_id)
				AND v.state IN ('destroyed', 'failed', 'saga_unwound'))
			OR EXISTS (SELECT 1 FROM migration m WHERE m.id = i.migration_id
				AND (m.source_state IN ('completed', 'failed') OR m.target_state IN ('completed', 'failed'))))
		ORDER BY i.id`)
}

// InstancesToStop returns the instances their users want stopped whose
// active VMM still runs, outside a migration: a stop (or force-terminate)
// whose call to the sled failed left them so (N13).
func (d *DataStore) InstancesToStop(ctx context.Context) ([]uuid.UUID, error) {
	return d.ids(ctx, `SELECT i.id FROM instance i JOIN vmm v ON v.id = i.active_propolis_id
		WHERE i.time_deleted IS NULL AND i.state = 'vmm' AND i.intended_state = 'stopped' AND i.migration_id IS NULL
			AND v.state IN ('running', 'rebooting')
		ORDER BY i.id`)
}

// InstancesToReincarnate returns failed instances the user wants running,
// whose policy allows an automatic restart and whose cooldown ended before
// cooledSince.
func (d *DataStore) InstancesToReincarnate(ctx context.Context, cooledSince time.Time) ([]uuid.UUID, error) {
	return d.ids(ctx, `SELECT id FROM instance
		WHERE time_deleted IS NULL AND state = 'failed' AND intended_state = 'running'
			AND auto_restart_policy = 'best_effort' AND updater_id IS NULL
			AND (time_last_auto_restarted IS NULL OR time_last_auto_restarted < $1)
		ORDER BY id`, ts(cooledSince))
}

// InstanceClaimAutoRestart records an automatic restart at `at` unless one
// happened since cooledSince, for replica, only while it is active (X3);
// true when this caller claimed it, so two nexus replicas never restart the
// same instance twice in one cooldown. The claim checks again, in its own
// statement, everything InstancesToReincarnate listed it for: a stop or
// force-terminate, a policy change or an update that came between the
// list and the claim wins, and the instance is not booted.
func (d *DataStore) InstanceClaimAutoRestart(ctx context.Context, id uuid.UUID, at, cooledSince time.Time, replica uuid.UUID) (bool, error) {
	res, err := d.db.ExecContext(ctx, `UPDATE instance SET time_last_auto_restarted = $2
		WHERE id = $1 AND time_deleted IS NULL AND state = 'failed'
			AND intended_state = 'running' AND auto_restart_policy = 'best_effort' AND updater_id IS NULL
			AND (time_last_auto_restarted IS NULL OR time_last_auto_restarted < $3) AND `+d.replicaActive("$4"),
		id.String(), ts(at), ts(cooledSince), replica.String())
	if err != nil {
		return false, d.classify(err)
	}
	n, err := res.RowsAffected()
	if err != nil || n == 1 {
		return n == 1, err
	}
	var active bool
	if err := d.db.QueryRowContext(ctx, `SELECT `+d.replicaActiveNoLock("$1"), replica.String()).Scan(&active); err != nil {
		return false, d.classify(err)
	}
	if !active {
		return false, notActive(replica)
	}
	return false, nil
}
