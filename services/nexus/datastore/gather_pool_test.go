package datastore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/racktest"
)

// F9, SPEC 7: any number of concurrent force-terminates of one instance
// whose row another transaction holds wait for it on one connection
// between them, not one each: they cannot take the whole pool, and the
// wish for a free instance made meanwhile is answered within its own
// short deadline.
func TestF9_ManyForceTerminatesOfOneHeldInstanceWaitOnOneConnection(t *testing.T) {
	db := racktest.NewDatabase(t, datastore.Postgres)
	ds := db.Open(t)
	observer := db.Open(t) // a second pool, to watch the first
	all := datastore.ProjectScope{All: true}
	held, free := runningOn(t, ds), runningOn(t, ds)
	release, err := ds.HoldRow(ctx, "instance", held.Instance.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	const callers = 40
	heldCtx, cancelHeld := context.WithTimeout(ctx, 30*time.Second)
	defer cancelHeld()
	errs := make(chan error, callers)
	for range callers {
		go func() {
			_, err := ds.InstanceIntendStopped(heldCtx, held.Instance.ID, all, now.Add(time.Minute))
			errs <- err
		}()
	}
	// They wait for the row one at a time: one session waits in
	// PostgreSQL, the others in nexus.
	testutil.WaitFor(t, 20*time.Second, func() error {
		n, err := observer.LockWaiters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			return fmt.Errorf("%d sessions wait for the held row, want 1", n)
		}
		return nil
	})
	freeCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = ds.InstanceIntendStopped(freeCtx, free.Instance.ID, all, now.Add(time.Minute))
	if err != nil {
		t.Errorf("the wish for a free instance while %d force-terminates of a held instance wait: %v after %v",
			callers, err, time.Since(start))
	}
	if n, err := observer.LockWaiters(ctx); err != nil || n != 1 {
		t.Errorf("%d sessions wait for the held row (%v), want 1", n, err)
	}
	release()
	for range callers {
		if err := <-errs; err != nil {
			t.Errorf("a force-terminate of the instance once its row was let go: %v", err)
		}
	}
}
