package datastore

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rackplane/rackplane/services/nexus/model"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// classify maps each backend's error codes onto model's errors, keeping
// the original error in the chain.
func (d *DataStore) classify(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505":
			return fmt.Errorf("%w: %v", model.ErrAlreadyExists, err)
		case "23514", "23503", "23502":
			return fmt.Errorf("%w: %v", model.ErrConstraint, err)
		}
		return err
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		switch liteErr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %v", model.ErrAlreadyExists, err)
		case sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY, sqlite3.SQLITE_CONSTRAINT_NOTNULL:
			return fmt.Errorf("%w: %v", model.ErrConstraint, err)
		}
	}
	return err
}
