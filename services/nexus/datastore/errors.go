package datastore

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var (
	// ErrNotFound means there is no such (live) row.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists means a unique name or id is taken.
	ErrAlreadyExists = errors.New("already exists")
	// ErrNoCapacity means no sled can take what was asked for.
	ErrNoCapacity = errors.New("insufficient capacity")
	// ErrInUse means a record cannot go while others depend on it.
	ErrInUse = errors.New("in use")
	// ErrConstraint means a CHECK or foreign-key constraint refused a
	// write: a bug in the caller, since input is validated before it gets
	// here.
	ErrConstraint = errors.New("database constraint violated")
)

// classify maps each backend's error codes onto the errors above, keeping
// the original error in the chain.
func (d *DataStore) classify(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505":
			return fmt.Errorf("%w: %v", ErrAlreadyExists, err)
		case "23514", "23503", "23502":
			return fmt.Errorf("%w: %v", ErrConstraint, err)
		}
		return err
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		switch liteErr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %v", ErrAlreadyExists, err)
		case sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY, sqlite3.SQLITE_CONSTRAINT_NOTNULL:
			return fmt.Errorf("%w: %v", ErrConstraint, err)
		}
	}
	return err
}
