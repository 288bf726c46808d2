package datastore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
)

// The nexus replicas (X2) and what keeps an expunged one from claiming
// anything (X3) and hands its sagas on once it is confirmed gone (X4).

// replicaActive is the condition, for a statement's WHERE, that the replica
// whose id is the parameter param is active (X3). On PostgreSQL it takes a
// share lock on the replica's row, so that claims and an expunge (which
// updates that row) are ordered: an expunge waits for a claim under way to
// commit, and a claim that comes after the expunge waits for it and then
// finds the replica expunged. SQLite runs one writer at a time already.
func (d *DataStore) replicaActive(param string) string {
	lock := ""
	if d.backend == Postgres {
		lock = " FOR SHARE"
	}
	return `EXISTS (SELECT 1 FROM nexus_zone WHERE id = ` + param + ` AND state = 'active'` + lock + `)`
}

// replicaActiveNoLock is replicaActive for a read that explains a refusal.
func (d *DataStore) replicaActiveNoLock(param string) string {
	return `EXISTS (SELECT 1 FROM nexus_zone WHERE id = ` + param + ` AND state = 'active')`
}

// notActive is the error of a claim its replica's state refused.
func notActive(replica uuid.UUID) error {
	return fmt.Errorf("%w: nexus %s", model.ErrReplicaNotActive, replica)
}

const nexusZoneColumns = `n.id, n.sled_id, n.internal_address, n.external_address, n.state, n.time_created,
	n.time_expunged, z.time_confirmed_gone, n.sagas_reassigned, n.reassigned_to, n.time_reassigned`

// nexusZoneFrom joins each replica to its zone, for the zone's confirmation.
const nexusZoneFrom = ` FROM nexus_zone n LEFT JOIN sled_zone z ON z.id = n.id`

func scanNexusZone(row rowScanner) (model.NexusZone, error) {
	var (
		n                                     model.NexusZone
		id, state                             string
		sled, reassignedTo                    *string
		created, expunged, gone, reassignedAt dbTime
	)
	if err := row.Scan(&id, &sled, &n.InternalAddress, &n.ExternalAddress, &state, &created,
		&expunged, &gone, &n.SagasReassigned, &reassignedTo, &reassignedAt); err != nil {
		return n, err
	}
	n.ID, n.State = uuid.MustParse(id), model.NexusZoneState(state)
	if sled != nil {
		n.SledID = uuid.MustParse(*sled)
	}
	if reassignedTo != nil {
		n.ReassignedTo = uuid.MustParse(*reassignedTo)
	}
	n.TimeCreated, n.TimeExpunged, n.ZoneConfirmedGone, n.TimeReassigned = created.Time, expunged.Time, gone.Time, reassignedAt.Time
	return n, nil
}

func insertReplica(ctx context.Context, tx *sql.Tx, n model.NexusZone) error {
	var sled any
	if n.SledID != uuid.Nil {
		sled = n.SledID.String()
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO nexus_zone (id, sled_id, internal_address, external_address,
		state, time_created, time_modified) VALUES ($1, $2, $3, $4, $5, $6, $6)`,
		n.ID.String(), sled, n.InternalAddress, n.ExternalAddress, string(n.State), ts(n.TimeCreated))
	return err
}

// NexusZoneList returns every nexus replica, by id.
func (d *DataStore) NexusZoneList(ctx context.Context) ([]model.NexusZone, error) {
	return list(ctx, d, scanNexusZone, `SELECT `+nexusZoneColumns+nexusZoneFrom+` ORDER BY n.id`)
}

// NexusZoneGet returns one replica; model.ErrNotFound when none has id.
func (d *DataStore) NexusZoneGet(ctx context.Context, id uuid.UUID) (model.NexusZone, error) {
	n, err := scanNexusZone(d.db.QueryRowContext(ctx, `SELECT `+nexusZoneColumns+nexusZoneFrom+` WHERE n.id = $1`, id.String()))
	if isNoRows(err) {
		return n, fmt.Errorf("%w: nexus replica %s", model.ErrNotFound, id)
	}
	return n, d.classify(err)
}

// NexusRegister records a replica that starts, unless it is recorded
// already (rack setup made it a zone, or it ran before): a replica started
// by hand is recorded active on no sled. It returns the replica as
// recorded, so that one that was expunged knows it never serves again.
func (d *DataStore) NexusRegister(ctx context.Context, n model.NexusZone) (model.NexusZone, error) {
	n.State = model.NexusActive
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var exists int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM nexus_zone WHERE id = $1`, n.ID.String()).Scan(&exists); err != nil {
			return err
		}
		if exists == 0 {
			return insertReplica(ctx, tx, n)
		}
		return nil
	})
	if errors.Is(err, model.ErrAlreadyExists) {
		err = nil // another start of the same replica recorded it first
	}
	if err != nil {
		return n, err
	}
	return d.NexusZoneGet(ctx, n.ID)
}

// ReplicaClaimsGet counts what each replica holds, by replica.
func (d *DataStore) ReplicaClaimsGet(ctx context.Context) (map[uuid.UUID]model.ReplicaClaims, error) {
	out := map[uuid.UUID]model.ReplicaClaims{}
	rows, err := d.db.QueryContext(ctx, `SELECT owner_nexus_id, state, count(*) FROM saga
		WHERE state IN ('running', 'unwinding', 'stuck') GROUP BY owner_nexus_id, state`)
	if err != nil {
		return nil, d.classify(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			owner, state string
			n            int64
		)
		if err := rows.Scan(&owner, &state, &n); err != nil {
			return nil, err
		}
		c := out[uuid.MustParse(owner)]
		switch state {
		case "running":
			c.Running = n
		case "unwinding":
			c.Unwinding = n
		case "stuck":
			c.Stuck = n
		}
		out[uuid.MustParse(owner)] = c
	}
	if err := rows.Err(); err != nil {
		return nil, d.classify(err)
	}
	locks, err := d.db.QueryContext(ctx, `SELECT s.owner_nexus_id, count(*) FROM instance i JOIN saga s ON s.id = i.updater_id
		WHERE i.updater_id IS NOT NULL AND i.time_deleted IS NULL GROUP BY s.owner_nexus_id`)
	if err != nil {
		return nil, d.classify(err)
	}
	defer locks.Close()
	for locks.Next() {
		var (
			owner string
			n     int64
		)
		if err := locks.Scan(&owner, &n); err != nil {
			return nil, err
		}
		c := out[uuid.MustParse(owner)]
		c.UpdaterLocks = n
		out[uuid.MustParse(owner)] = c
	}
	return out, d.classify(locks.Err())
}

// ReplicasToRelieve returns the expunged replicas whose zones are confirmed
// gone and which still own unfinished sagas: the ones whose sagas an active
// replica may now take (X4).
func (d *DataStore) ReplicasToRelieve(ctx context.Context) ([]uuid.UUID, error) {
	return d.ids(ctx, `SELECT n.id FROM nexus_zone n JOIN sled_zone z ON z.id = n.id
		WHERE n.state = 'expunged' AND z.time_confirmed_gone IS NOT NULL
			AND EXISTS (SELECT 1 FROM saga s WHERE s.owner_nexus_id = n.id AND s.state IN ('running', 'unwinding'))
		ORDER BY n.id`)
}

// SagasReassign moves the unfinished sagas (and with them the updater
// locks they hold) of an expunged replica whose zone is confirmed gone to
// the replica to, which must be active, and records the move (X4). Both
// conditions are checked in the statement that moves them: nothing moves
// from a replica that may still run, or to one that was expunged. It
// returns how many moved.
func (d *DataStore) SagasReassign(ctx context.Context, from, to uuid.UUID, at time.Time) ([]uuid.UUID, error) {
	var moved []uuid.UUID
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		moved, err = queryAll(ctx, tx, scanUUID, `UPDATE saga SET owner_nexus_id = $2, time_state_changed = $3
			WHERE owner_nexus_id = $1 AND state IN ('running', 'unwinding')
				AND EXISTS (SELECT 1 FROM nexus_zone n JOIN sled_zone z ON z.id = n.id
					WHERE n.id = $1 AND n.state = 'expunged' AND z.time_confirmed_gone IS NOT NULL)
				AND `+d.replicaActive("$2")+` RETURNING id`, from.String(), to.String(), ts(at))
		if err != nil || len(moved) == 0 {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE nexus_zone SET sagas_reassigned = sagas_reassigned + $2, reassigned_to = $3,
			time_reassigned = $4 WHERE id = $1`, from.String(), len(moved), to.String(), ts(at))
		return err
	})
	return moved, err
}

// OwnedSaga is a saga with its owner's state (X6): "" when the owner is no
// recorded replica.
type OwnedSaga struct {
	saga.Record
	OwnerState model.NexusZoneState
}

// SagaListOpen returns every unfinished and stuck saga with its owner's
// state, oldest first. It reads the partial indexes of those states only:
// finished sagas (history) are not scanned.
func (d *DataStore) SagaListOpen(ctx context.Context) ([]OwnedSaga, error) {
	return list(ctx, d, func(row rowScanner) (OwnedSaga, error) {
		var (
			o     OwnedSaga
			state *string
		)
		r, err := scanSaga(scanFunc(func(dest ...any) error { return row.Scan(append(dest, &state)...) }))
		o.Record = r
		if state != nil {
			o.OwnerState = model.NexusZoneState(*state)
		}
		return o, err
	}, `SELECT `+qualified("s", sagaColumns)+`, n.state FROM saga s LEFT JOIN nexus_zone n ON n.id = s.owner_nexus_id
		WHERE s.state IN ('running', 'unwinding', 'stuck') ORDER BY s.time_created, s.id`)
}

// UpdaterLock is an instance whose updater lock is held, and by which saga
// of which replica (X6). The saga fields are empty for a lock no saga
// holds as itself.
type UpdaterLock struct {
	Instance        uuid.UUID
	InstanceName    string
	Project         uuid.UUID
	Saga            uuid.UUID
	SagaTemplate    string
	Owner           uuid.UUID
	OwnerState      model.NexusZoneState
	OwnerSled       uuid.UUID // the sled the owner's zone is on; Nil when not known
	TimeSagaCreated time.Time
}

// UpdaterLockList returns every held updater lock, by instance.
func (d *DataStore) UpdaterLockList(ctx context.Context) ([]UpdaterLock, error) {
	return list(ctx, d, scanUpdaterLock, `SELECT `+updaterLockColumns+updaterLockFrom+`
		WHERE i.updater_id IS NOT NULL AND i.time_deleted IS NULL ORDER BY i.id`)
}

// UpdaterLockGet returns who holds an instance's updater lock;
// model.ErrNotFound when nobody does.
func (d *DataStore) UpdaterLockGet(ctx context.Context, instance uuid.UUID) (UpdaterLock, error) {
	l, err := scanUpdaterLock(d.db.QueryRowContext(ctx, `SELECT `+updaterLockColumns+updaterLockFrom+`
		WHERE i.id = $1 AND i.updater_id IS NOT NULL AND i.time_deleted IS NULL`, instance.String()))
	if isNoRows(err) {
		return l, fmt.Errorf("%w: nobody holds instance %s's updater lock", model.ErrNotFound, instance)
	}
	return l, d.classify(err)
}

const (
	updaterLockColumns = `i.id, i.name, i.project_id, s.id, s.template_name, s.owner_nexus_id, n.state, n.sled_id, s.time_created`
	updaterLockFrom    = ` FROM instance i LEFT JOIN saga s ON s.id = i.updater_id
		LEFT JOIN nexus_zone n ON n.id = s.owner_nexus_id`
)

func scanUpdaterLock(row rowScanner) (UpdaterLock, error) {
	var (
		l                       UpdaterLock
		id, project             string
		sagaID, template, owner *string
		ownerState, ownerSled   *string
		created                 dbTime
	)
	if err := row.Scan(&id, &l.InstanceName, &project, &sagaID, &template, &owner, &ownerState, &ownerSled, &created); err != nil {
		return l, err
	}
	if template != nil {
		l.SagaTemplate = *template
	}
	if ownerSled != nil {
		l.OwnerSled = uuid.MustParse(*ownerSled)
	}
	l.Instance, l.Project, l.TimeSagaCreated = uuid.MustParse(id), uuid.MustParse(project), created.Time
	if sagaID != nil {
		l.Saga = uuid.MustParse(*sagaID)
	}
	if owner != nil {
		l.Owner = uuid.MustParse(*owner)
	}
	if ownerState != nil {
		l.OwnerState = model.NexusZoneState(*ownerState)
	}
	return l, nil
}
