package model

import "errors"

// Domain errors. Every layer wraps these (with context) and tests them with
// errors.Is; the gRPC handlers map them to status codes in one table.
var (
	// ErrNotFound means there is no such (live) record.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists means a unique name or id is taken.
	ErrAlreadyExists = errors.New("already exists")
	// ErrNoCapacity means no sled can take what was asked for.
	ErrNoCapacity = errors.New("insufficient capacity")
	// ErrConflict means the request contradicts what is recorded (a rack
	// set up with another plan).
	ErrConflict = errors.New("conflict")
	// ErrInUse means a record cannot go while others depend on it.
	ErrInUse = errors.New("in use")
	// ErrConstraint means a CHECK or foreign-key constraint refused a
	// write: a bug in the caller, since input is validated before it gets
	// to the database.
	ErrConstraint = errors.New("database constraint violated")

	// ErrInstanceBusy means the instance is not in a state the operation
	// can act from (it is already starting, running, or changed
	// meanwhile).
	ErrInstanceBusy = errors.New("instance is busy")
	// ErrInstanceNotStopped means the operation needs a stopped or failed
	// instance.
	ErrInstanceNotStopped = errors.New("instance is not stopped")
	// ErrUpdaterLockHeld means another update holds the instance's
	// updater lock; it (or the background updater) will do the work.
	ErrUpdaterLockHeld = errors.New("instance updater lock is held by another update")
	// ErrUpdateInProgress means another update held the instance's
	// updater lock for longer than force-terminate waits; the VMMs are
	// terminated and that update settles the instance.
	ErrUpdateInProgress = errors.New("another update of the instance is in progress")
	// ErrSameSled means a migration was asked to move an instance to the
	// sled it already runs on.
	ErrSameSled = errors.New("the destination is the instance's own sled")

	// ErrVMMGone means a sled-agent answered that it does not know the VMM
	// (NO_SUCH_VMM): the only answer that means "gone".
	ErrVMMGone = errors.New("the sled-agent does not know the VMM (NO_SUCH_VMM)")
	// ErrSledUnreachable means a sled-agent call got no answer: it proves
	// nothing about the VMM.
	ErrSledUnreachable = errors.New("sled-agent unreachable")
	// ErrZonesOutdated means a sled refused a zones config because it
	// ledgers a newer generation already (Z1).
	ErrZonesOutdated = errors.New("the sled ledgers a newer zones config")
	// ErrReplicaNotActive means a nexus replica tried to claim work (create
	// a saga, take an updater lock, claim a restart) after it was expunged,
	// or without being recorded at all (X3): nothing was claimed.
	ErrReplicaNotActive = errors.New("this nexus replica is not active (expunged)")
	// ErrLastReplica refuses to expunge the last active nexus replica:
	// nobody would be left to serve or to take its sagas.
	ErrLastReplica = errors.New("the last active nexus replica cannot be expunged")
	// ErrNotPlacedHere refuses a sled's report about a VMM, or a migration
	// side, that is not its own (S3).
	ErrNotPlacedHere = errors.New("not the reporter's")
	// ErrDatabaseUnavailable means the database could not take the
	// statement: no server that accepts writes answered, a connection
	// broke, or a server refused writes (a standby, or a primary being
	// failed over, R2). A retry may find the new primary; a write it cut
	// short may or may not have committed.
	ErrDatabaseUnavailable = errors.New("the database is unavailable")
)
