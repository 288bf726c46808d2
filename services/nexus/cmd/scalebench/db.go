package main

import (
	"context"
	"fmt"
	"os"
	"sort"

	"github.com/rackplane/rackplane/services/nexus/datastore"
)

// databaseFigures are the database's size and rows at the end.
type databaseFigures struct {
	Backend string `json:"backend"`
	// SizeBytes is pg_database_size, or the SQLite files' sizes added.
	SizeBytes int64 `json:"size_bytes"`
	// Files are the SQLite files' sizes (the database, its WAL and shared
	// memory index).
	Files map[string]int64 `json:"files,omitempty"`
	// Rows is count(*) of every table; TableBytes each PostgreSQL table's
	// pg_total_relation_size (indexes and TOAST included).
	Rows       map[string]int64 `json:"rows"`
	TableBytes map[string]int64 `json:"table_bytes,omitempty"`
}

// databaseFigures reads the database's size and the rows of every table.
func (b *bench) databaseFigures(ctx context.Context) error {
	f := databaseFigures{Backend: string(b.backend), Rows: map[string]int64{}}
	var tables []string
	if b.backend == datastore.Postgres {
		if err := b.db.QueryRowContext(ctx, `SELECT pg_database_size(current_database())`).Scan(&f.SizeBytes); err != nil {
			return err
		}
		rows, err := b.db.QueryContext(ctx, `SELECT table_name FROM information_schema.tables
			WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`)
		if err != nil {
			return err
		}
		if tables, err = scanStrings(rows); err != nil {
			return err
		}
		f.TableBytes = map[string]int64{}
	} else {
		f.Files = map[string]int64{}
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if st, err := os.Stat(b.dbURL + suffix); err == nil {
				f.Files["nexus.db"+suffix] = st.Size()
				f.SizeBytes += st.Size()
			}
		}
		rows, err := b.db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
		if err != nil {
			return err
		}
		if tables, err = scanStrings(rows); err != nil {
			return err
		}
	}
	sort.Strings(tables)
	for _, t := range tables {
		var n int64
		if err := b.db.QueryRowContext(ctx, fmt.Sprintf(`SELECT count(*) FROM %q`, t)).Scan(&n); err != nil {
			return fmt.Errorf("counting %s: %w", t, err)
		}
		f.Rows[t] = n
		if b.backend == datastore.Postgres {
			var size int64
			if err := b.db.QueryRowContext(ctx, `SELECT pg_total_relation_size(quote_ident($1)::regclass)`, t).Scan(&size); err != nil {
				return fmt.Errorf("sizing %s: %w", t, err)
			}
			f.TableBytes[t] = size
		}
	}
	b.fig.db = &f
	return nil
}

// scanStrings reads one text column of every row.
func scanStrings(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
	Close() error
}) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
