package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/racktest"
)

// faultExpunge is the operator expunging a wedged replica's zone halfway
// through a run (--expunge): its sled-agent kills the zone, inventory confirms it
// gone, and its sagas and their updater locks move to an active replica
// (X3, X4). Once per run, since the replica never comes back; the faults
// after it spare that replica.
const faultExpunge faultKind = "expunge"

// expungeBound bounds getting the expunge accepted: a replica answering
// it may be killed or cut off from the database just then.
const expungeBound = time.Minute

const invExpunged = "an expunged replica is confirmed gone and owns no saga or lock (X3, X4)"

// serving maps replica i, drawn for a call or a fault, onto one that
// still serves: the next one when i is the replica the run expunged.
func (h *harness) serving(i int) int {
	if int(h.expunged.Load()) == i {
		return (i + 1) % len(h.apis)
	}
	return i
}

// expunge wedges replica r (SIGSTOP of its zone process, in the middle
// of whatever sagas it runs) and expunges it through the other replicas,
// as an operator would, until the database records it expunged: the
// seed-000 case, where its sagas may move only once its sled-agent has
// killed the zone and inventory has confirmed it gone.
func (h *harness) expunge(r int) int {
	r = h.wedgeMidSaga(r)
	n := h.rack.Nexus(r)
	h.say("expunge of replica %d (%s), wedged, through the others", r, n.ID())
	h.expunged.Store(int32(r)) // the clients call the others from now on
	// Replica i is the zone of sled i.
	path := "/v1/system/hardware/sleds/" + h.sledIDs[r] + "/zones/" + n.ID().String() + "/expunge"
	attempt := 0
	testutil.WaitFor(h.tb, expungeBound, func() error {
		attempt++
		via := (r + attempt) % len(h.apis)
		if via == r {
			return fmt.Errorf("not through the replica expunged")
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.o.callTimeout)
		defer cancel()
		if resp, err := h.apis[via].Do(ctx, http.MethodPost, path, ""); err != nil {
			return err
		} else if resp.Status != http.StatusOK {
			// An answer lost before this one may have expunged it.
			if state := h.replicaState(ctx, r); state != "expunged" {
				return fmt.Errorf("replica %d answered %d: %s", via, resp.Status, resp.Body)
			}
		}
		return nil
	})
	return r
}

// wedgeTries bounds the search for a replica to wedge while it runs a
// saga.
const wedgeTries = 50

// wedgeMidSaga freezes a replica's zone process (SIGSTOP) while it owns an
// unfinished saga, trying the replicas in turn from r, each frozen only
// long enough to look; it returns the one left frozen (the last tried if
// none ran a saga when looked at).
func (h *harness) wedgeMidSaga(r int) int {
	for try := range wedgeTries {
		n := h.rack.Nexus(r).(*racktest.ZoneNexus)
		n.Pause()
		var open int
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := h.db.QueryRowContext(ctx, `SELECT count(*) FROM saga WHERE owner_nexus_id = $1 AND state IN ('running', 'unwinding')`,
			n.ID().String()).Scan(&open)
		cancel()
		if (err == nil && open > 0) || try == wedgeTries-1 {
			h.say("replica %d wedged owning %d unfinished sagas (look %d)", r, open, try+1)
			return r
		}
		n.Resume()
		r = (r + 1) % replicas
		time.Sleep(100 * time.Millisecond)
	}
	return r
}

// replicaState is replica r's state as the database records it.
func (h *harness) replicaState(ctx context.Context, r int) string {
	var state string
	h.db.QueryRowContext(ctx, `SELECT state FROM nexus_zone WHERE id = $1`, h.rack.Nexus(r).ID().String()).Scan(&state) //nolint:errcheck // "" is no answer
	return state
}

// expungedInvariant checks the replica the run expunged, if any: its zone
// confirmed gone and its process dead, no unfinished saga of its own left,
// no updater lock held by a saga it owns.
func (h *harness) expungedInvariant(ctx context.Context) []verdict {
	r := int(h.expunged.Load())
	if r < 0 {
		return nil
	}
	id := h.rack.Nexus(r).ID().String()
	problems := h.query(ctx, `SELECT 'replica ' || n.id || ' is ' || n.state ||
				CASE WHEN z.time_confirmed_gone IS NULL THEN ', its zone not confirmed gone' ELSE '' END
			FROM nexus_zone n JOIN sled_zone z ON z.id = n.id
			WHERE n.id = $1 AND (n.state <> 'expunged' OR z.time_confirmed_gone IS NULL)
		UNION ALL
		SELECT 'saga ' || s.id || ' (' || s.template_name || ') of the expunged replica is ' || s.state
			FROM saga s WHERE s.owner_nexus_id = $1 AND s.state IN ('running', 'unwinding')
		UNION ALL
		SELECT 'instance ' || i.id || ': lock held by saga ' || i.updater_id || ' of the expunged replica'
			FROM instance i JOIN saga s ON s.id = i.updater_id WHERE s.owner_nexus_id = $1 AND i.time_deleted IS NULL`, id)
	if n, ok := h.rack.Nexus(r).(*racktest.ZoneNexus); ok && n.Running() {
		problems = append(problems, fmt.Sprintf("replica %s's zone process still runs", id))
	}
	return []verdict{{name: invExpunged, problems: problems}}
}

// reassigned is how many sagas moved from the expunged replica, and to
// whom: for the summary.
func (h *harness) reassigned(ctx context.Context) string {
	r := int(h.expunged.Load())
	if r < 0 {
		return ""
	}
	out := h.query(ctx, `SELECT 'replica ' || id || ' expunged; ' || sagas_reassigned || ' sagas reassigned' ||
			COALESCE(' to ' || reassigned_to, '') FROM nexus_zone WHERE id = $1`, h.rack.Nexus(r).ID().String())
	if len(out) == 0 {
		return ""
	}
	return out[0]
}
