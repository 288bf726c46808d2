package datastore_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// N2: a project delete racing an instance create in it never leaves a live
// instance in a deleted project: either the create wins and the delete is
// refused (the project holds an instance), or the delete wins and the
// create is refused (no such project). On PostgreSQL each statement read
// the other's table before either committed, and both went through.
func TestN2_AProjectDeleteRacingAnInstanceCreateNeverLeavesAnOrphan(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ds *datastore.DataStore) {
		const rounds = 60
		orphans := 0
		for round := range rounds {
			p := model.Project{ID: uuid.New(), Name: fmt.Sprintf("race-%d", round), TimeCreated: now}
			if err := ds.ProjectCreate(ctx, p); err != nil {
				t.Fatal(err)
			}
			inst := newInstance(p.ID, "vm")
			var (
				start             = make(chan struct{})
				wg                sync.WaitGroup
				createErr, delErr error
			)
			wg.Add(2)
			go func() {
				defer wg.Done()
				<-start
				createErr = ds.InstanceCreate(ctx, inst)
			}()
			go func() {
				defer wg.Done()
				<-start
				delErr = ds.ProjectDelete(ctx, p.ID, time.Now())
			}()
			close(start)
			wg.Wait()
			for _, err := range []error{createErr, delErr} {
				if err != nil && !errors.Is(err, model.ErrNotFound) && !errors.Is(err, model.ErrInUse) {
					t.Fatalf("round %d: %v", round, err)
				}
			}
			_, projectErr := ds.ProjectGet(ctx, p.ID)
			_, instanceErr := ds.InstanceGet(ctx, inst.ID)
			if errors.Is(projectErr, model.ErrNotFound) && instanceErr == nil {
				orphans++
			}
		}
		if orphans > 0 {
			t.Fatalf("%d of %d races left a live instance in a deleted project", orphans, rounds)
		}
	})
}
