package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
)

// Invariant names, as the summary prints them.
const (
	invSettled     = "the rack settles once faults stop (no instance left transitional, N13)"
	invSagas       = "no saga left unfinished"
	invUnknownVMM  = "no VMM runs that nexus does not know (N12)"
	invRunsTwice   = "no instance runs twice"
	invLocks       = "no updater lock outlives its saga or its owner"
	invGenerations = "generations never go backwards (N3)"
)

// verdict is one invariant's result.
type verdict struct {
	name     string
	problems []string
}

// settledStates are the run states an instance may rest in.
var settledStates = []string{"running", "stopped", "failed"}

// settle waits until every instance rests and the invariants checked
// against the rack's present hold (an orphaned VMM is unregistered by a
// background task, so this takes a while), within --settle-timeout. It
// returns the verdicts of the last look.
func (h *harness) settle(ctx context.Context) (settled verdict, present []verdict) {
	settled.name = invSettled
	var resting error
	pollUntil(ctx, h.o.settleTimeout, func() bool {
		present = h.presentInvariants(ctx)
		resting = h.instancesRest(ctx)
		return resting == nil && !slices.ContainsFunc(present, func(v verdict) bool { return len(v.problems) > 0 })
	})
	if resting != nil {
		settled.problems = []string{fmt.Sprintf("not within %s: %v", h.o.settleTimeout, resting)}
	}
	return settled, present
}

// pollUntil polls cond until it holds or timeout passes, giving up early
// when ctx ends.
func pollUntil(ctx context.Context, timeout time.Duration, cond func() bool) {
	deadline := time.Now().Add(timeout)
	for {
		if cond() || ctx.Err() != nil || time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// instancesRest says why some instance does not rest, as the replicas
// list them: nil once each replica lists every instance in a resting run
// state.
func (h *harness) instancesRest(ctx context.Context) error {
	for i, api := range h.apis {
		if h.serving(i) != i {
			continue // expunged
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		items, err := listInstances(ctx, api)
		cancel()
		if err != nil {
			return fmt.Errorf("replica %d: %w", i, err)
		}
		for _, it := range items {
			if !slices.Contains(settledStates, it.RunState) {
				return fmt.Errorf("replica %d lists instance %s %s", i, it.ID, it.RunState)
			}
		}
	}
	return nil
}

// presentInvariants checks what must hold of the settled rack, against
// the database and every sled's inventory.
func (h *harness) presentInvariants(ctx context.Context) []verdict {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	vmms, err := h.readVMMs(ctx)
	inventories, invErr := h.inventories(ctx)
	err = errors.Join(err, invErr)
	out := []verdict{
		{name: invSagas, problems: h.openSagas(ctx)},
		{name: invUnknownVMM, problems: unknownVMMs(inventories, vmms)},
		{name: invRunsTwice, problems: runningTwice(inventories, vmms)},
		{name: invLocks, problems: h.heldLocks(ctx)},
	}
	out = append(out, h.expungedInvariant(ctx)...)
	if err != nil {
		// Unread, nothing is proved.
		for i := range out[1:3] {
			out[1+i].problems = append(out[1+i].problems, "could not read: "+err.Error())
		}
	}
	return out
}

// vmmRow is a VMM as the database records it.
type vmmRow struct {
	id, instance, sled, state string
}

// live: the VMM has not ended in the database.
func (v vmmRow) live() bool {
	return v.state != "destroyed" && v.state != "failed" && v.state != "saga_unwound"
}

func (h *harness) readVMMs(ctx context.Context) (map[string]vmmRow, error) {
	rows, err := h.db.QueryContext(ctx, `SELECT id, instance_id, sled_id, state FROM vmm WHERE time_deleted IS NULL`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]vmmRow{}
	for rows.Next() {
		var v vmmRow
		if err := rows.Scan(&v.id, &v.instance, &v.sled, &v.state); err != nil {
			return nil, err
		}
		out[v.id] = v
	}
	return out, rows.Err()
}

// inventories are every sled's VMMs, by sled id.
func (h *harness) inventories(ctx context.Context) (map[string][]*sledagentv1.VmmInventory, error) {
	out := map[string][]*sledagentv1.VmmInventory{}
	for _, s := range h.rack.Sleds() {
		inv, err := s.Agent().Client.GetInventory(ctx, &sledagentv1.GetInventoryRequest{})
		if err != nil {
			return nil, fmt.Errorf("sled %s's inventory: %w", s.ID(), err)
		}
		out[s.ID().String()] = inv.GetVmms()
	}
	return out, nil
}

// unknownVMMs are the VMMs registered on a sled that the database does not
// know there, or records as ended (N12).
func unknownVMMs(inventories map[string][]*sledagentv1.VmmInventory, vmms map[string]vmmRow) []string {
	var out []string
	for sled, list := range inventories {
		for _, v := range list {
			row, ok := vmms[v.GetVmmId()]
			switch {
			case !ok:
				out = append(out, fmt.Sprintf("sled %s runs VMM %s (instance %s, %s) that the database does not know",
					sled, v.GetVmmId(), v.GetInstanceId(), v.GetRuntime().GetState()))
			case row.sled != sled:
				out = append(out, fmt.Sprintf("sled %s runs VMM %s that the database places on sled %s", sled, row.id, row.sled))
			case !row.live():
				out = append(out, fmt.Sprintf("sled %s runs VMM %s (instance %s, %s) that the database records %s",
					sled, row.id, row.instance, v.GetRuntime().GetState(), row.state))
			}
		}
	}
	sort.Strings(out)
	return out
}

// runningTwice are the instances with more than one VMM registered on the
// sleds, or live in the database, once settled.
func runningTwice(inventories map[string][]*sledagentv1.VmmInventory, vmms map[string]vmmRow) []string {
	onSleds := map[string][]string{}
	for sled, list := range inventories {
		for _, v := range list {
			onSleds[v.GetInstanceId()] = append(onSleds[v.GetInstanceId()], v.GetVmmId()+" on sled "+sled)
		}
	}
	live := map[string][]string{}
	for _, v := range vmms {
		if v.live() {
			live[v.instance] = append(live[v.instance], v.id+" "+v.state)
		}
	}
	var out []string
	for instance, list := range onSleds {
		if len(list) > 1 {
			out = append(out, fmt.Sprintf("instance %s has %d VMMs on the sleds: %s", instance, len(list), strings.Join(list, ", ")))
		}
	}
	for instance, list := range live {
		if len(list) > 1 {
			out = append(out, fmt.Sprintf("instance %s has %d live VMMs in the database: %s", instance, len(list), strings.Join(list, ", ")))
		}
	}
	sort.Strings(out)
	return out
}

// openSagas are the sagas not finished: running, unwinding, or stuck (an
// undo kept failing, and an operator must step in), each with the last
// failure its log holds.
func (h *harness) openSagas(ctx context.Context) []string {
	return h.query(ctx, `SELECT 'saga ' || s.id || ' (' || s.template_name || ') of replica ' || s.owner_nexus_id ||
			' is ' || s.state || COALESCE(' after ' || (SELECT e.node_name || ' ' || e.event_type || ': ' || COALESCE(e.error, '')
				FROM saga_node_event e WHERE e.saga_id = s.id AND e.event_type IN ('failed', 'undo_failed')
				ORDER BY e.time_created DESC LIMIT 1), '')
		FROM saga s WHERE s.state IN ('running', 'unwinding', 'stuck') ORDER BY s.time_created`)
}

// heldLocks are the updater locks held once settled, each with its saga's
// state and its owner's: every saga has finished by then, so any lock
// still held outlived its saga (or its owner, expunged or dead).
func (h *harness) heldLocks(ctx context.Context) []string {
	return h.query(ctx, `SELECT 'instance ' || i.id || ': lock held by saga ' || i.updater_id || ' (' ||
			COALESCE(s.state, 'no such saga') || ', replica ' || COALESCE(s.owner_nexus_id, '?') || ' ' ||
			COALESCE(z.state, 'unknown') || ')'
		FROM instance i LEFT JOIN saga s ON s.id = i.updater_id LEFT JOIN nexus_zone z ON z.id = s.owner_nexus_id
		WHERE i.updater_id IS NOT NULL AND i.time_deleted IS NULL ORDER BY i.id`)
}

// query returns the one text column of each row; a failed query is one
// problem naming the error.
func (h *harness) query(ctx context.Context, q string, args ...any) []string {
	rows, err := h.db.QueryContext(ctx, q, args...)
	if err != nil {
		return []string{"could not read: " + err.Error()}
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s sql.NullString
		if err := rows.Scan(&s); err != nil {
			return []string{"could not read: " + err.Error()}
		}
		out = append(out, s.String)
	}
	if err := rows.Err(); err != nil {
		out = append(out, "could not read: "+err.Error())
	}
	return out
}

// verdict is what the sampling found.
func (g *generations) verdict() verdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	v := verdict{name: invGenerations, problems: slices.Clone(g.backward)}
	if g.samples == 0 {
		v.problems = append(v.problems, "no sample of the database's generations was taken")
	}
	return v
}
