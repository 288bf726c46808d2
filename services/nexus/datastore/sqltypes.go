package datastore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

func stringOrNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ts is how a time is written: UTC RFC 3339 text with microseconds, which
// both backends store as the same instant.
func ts(t time.Time) string {
	return t.UTC().Truncate(time.Microsecond).Format("2006-01-02T15:04:05.000000Z07:00")
}

// dbTime scans a timestamp from either backend.
type dbTime struct {
	Time  time.Time
	Valid bool
}

func (t *dbTime) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		t.Valid = false
		return nil
	case time.Time:
		t.Time, t.Valid = v.UTC(), true
		return nil
	case string:
		return t.parse(v)
	case []byte:
		return t.parse(string(v))
	}
	return fmt.Errorf("cannot scan %T into a timestamp", src)
}

func (t *dbTime) parse(s string) error {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999Z07:00"} {
		if parsed, err := time.Parse(layout, s); err == nil {
			t.Time, t.Valid = parsed.UTC(), true
			return nil
		}
	}
	return fmt.Errorf("unparsable timestamp %q", s)
}

func (t dbTime) ptr() *time.Time {
	if !t.Valid {
		return nil
	}
	v := t.Time
	return &v
}

var errNoRows = sql.ErrNoRows

func isNoRows(err error) bool { return errors.Is(err, errNoRows) }

func idOrNil(id *uuid.UUID) any {
	if id == nil {
		return nil
	}
	return id.String()
}

func parseOptionalID(s *string) *uuid.UUID {
	if s == nil {
		return nil
	}
	id := uuid.MustParse(*s)
	return &id
}

type rowsAffected interface{ RowsAffected() (int64, error) }

// guardOutcome tells "not written" from "not found" after a guarded UPDATE
// touched no row.
func (d *DataStore) guardOutcome(ctx context.Context, res rowsAffected, table string, id uuid.UUID) (bool, error) {
	// A row is its own owner: only missing or not newer remain.
	return d.reportOutcome(ctx, res, `SELECT id FROM `+table+` WHERE id = $1 AND time_deleted IS NULL`, table, id, id)
}

// reportOutcome classifies a reported write that changed no row: the row
// is missing (model.ErrNotFound), someone else's to report
// (model.ErrNotPlacedHere: the owner column, read by ownerQuery, is not
// reporter), or the report is not newer (false, nil).
func (d *DataStore) reportOutcome(ctx context.Context, res rowsAffected, ownerQuery, table string, id, reporter uuid.UUID) (bool, error) {
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return n == 1, err
	}
	var owner string
	err := d.db.QueryRowContext(ctx, ownerQuery, id.String()).Scan(&owner)
	switch {
	case isNoRows(err):
		return false, fmt.Errorf("%w: %s %s", model.ErrNotFound, table, id)
	case err != nil:
		return false, d.classify(err)
	case owner != reporter.String():
		return false, fmt.Errorf("%w: %s %s is not %s's", model.ErrNotPlacedHere, table, id, reporter)
	}
	return false, nil
}

// rowScanner is one row being read, from QueryRow or from Query.
type rowScanner interface{ Scan(dest ...any) error }

// queryAll runs a query and scans every row it returns: the one loop over
// rows in this package. Errors come back as the driver gave them.
func queryAll[T any](ctx context.Context, q queryer, scan func(rowScanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// ListOrder is a listing's keyset order, one of Oxide's sort modes: by
// name or by id, ascending unless Descending.
type ListOrder struct {
	ByID, Descending bool
}

// The orders the listings take.
var (
	ByNameAscending  = ListOrder{}
	ByNameDescending = ListOrder{Descending: true}
	ByIDAscending    = ListOrder{ByID: true}
)

// keyset is o's condition on where a page resumes (the query's parameter
// number after, "" for the first page) and its ORDER BY.
func (o ListOrder) keyset(after int) (where, orderBy string) {
	column := "name"
	if o.ByID {
		column = "id"
	}
	if o.Descending {
		return fmt.Sprintf("($%d = '' OR %s < $%d)", after, column, after), column + " DESC"
	}
	return fmt.Sprintf("%s > $%d", column, after), column
}

// list is queryAll on the database, with its errors classified.
func list[T any](ctx context.Context, d *DataStore, scan func(rowScanner) (T, error), query string, args ...any) ([]T, error) {
	out, err := queryAll(ctx, d.db, scan, query, args...)
	return out, d.classify(err)
}

// ids runs a query of one id column.
func (d *DataStore) ids(ctx context.Context, query string, args ...any) ([]uuid.UUID, error) {
	return list(ctx, d, scanUUID, query, args...)
}

// scanUUID reads a row of one id.
func scanUUID(row rowScanner) (uuid.UUID, error) {
	var id string
	if err := row.Scan(&id); err != nil {
		return uuid.Nil, err
	}
	return uuid.Parse(id)
}

// qualified prefixes each of the comma-separated columns with table.
func qualified(table, columns string) string {
	fields := strings.Split(columns, ",")
	for i, f := range fields {
		fields[i] = table + "." + strings.TrimSpace(f)
	}
	return strings.Join(fields, ", ")
}

// scanFunc lets a function stand where a row is scanned.
type scanFunc func(dest ...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

func stringPtrOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func idPtr(id *uuid.UUID) *string {
	if id == nil {
		return nil
	}
	s := id.String()
	return &s
}

// idList is the condition that column is one of the ids in parameter
// param, and the argument to pass there: one statement text whatever the
// number of ids, so that pgx's cache of prepared statements is not filled
// with one per length. PostgreSQL takes a text array, SQLite a JSON array.
func (d *DataStore) idList(column, param string, ids []uuid.UUID) (condition string, arg any) {
	texts := make([]string, len(ids))
	for i, id := range ids {
		texts[i] = id.String()
	}
	if d.backend == Postgres {
		return column + ` = ANY(` + param + `::text[])`, texts
	}
	encoded, _ := json.Marshal(texts) // strings always encode
	return column + ` IN (SELECT value FROM json_each(` + param + `))`, string(encoded)
}
