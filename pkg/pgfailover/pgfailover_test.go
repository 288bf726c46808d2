package pgfailover_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/rackplane/rackplane/pkg/pgfailover"
	"github.com/rackplane/rackplane/pkg/testutil"
)

// TestR2_ACommitThePrimaryAcknowledgedIsOnTheStandbyItPromotes commits a
// row and kills the primary at once: the standby the monitor promotes has
// the row, since the primary waited for it before acknowledging, and the
// formation's DSN reaches it for writes.
func TestR2_ACommitThePrimaryAcknowledgedIsOnTheStandbyItPromotes(t *testing.T) {
	f := pgfailover.Start(t)
	db, err := sql.Open("pgx", f.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE acknowledged (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO acknowledged VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	old := f.KillPrimary()
	promoted := f.WaitPromoted(old)
	t.Logf("%s killed, %s promoted after %s", old, promoted, time.Since(killed).Round(time.Millisecond))
	// The pool's connection to the killed primary fails once; the next
	// one finds the new primary.
	testutil.WaitFor(t, 30*time.Second, func() error {
		_, err := db.ExecContext(ctx, "INSERT INTO acknowledged VALUES (2)")
		return err
	})
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM acknowledged WHERE id = 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("the acknowledged row after the failover: %d rows, %v; want 1", n, err)
	}
}
