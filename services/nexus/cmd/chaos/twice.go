package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
)

// twiceWatch samples every sled's inventory throughout a run for an
// instance whose guest runs twice: two VMMs starting, running or
// rebooting at once. The sleds are read one after another, not at one
// instant, so one look proves nothing (a VMM read running on one sled may
// have stopped before its successor, read on the next, started). So each
// sample reads every sled twice: a VMM that holds the guest in both
// passes held it all along between its two reads (a VMM that stopped
// never holds a guest again), and two such VMMs of one instance held it
// together at the later of their first reads. A migration's source and
// target (the database's migration table pairs them) hand the guest over
// and are no guest running twice.
type twiceWatch struct {
	mu      sync.Mutex
	samples int
	found   []string
}

// guestStates are the VMM states in which a VMM holds the guest (a
// migration's sides are MIGRATING until it resolves).
var guestStates = []sledagentv1.VmmState{sledagentv1.VmmState_VMM_STATE_STARTING,
	sledagentv1.VmmState_VMM_STATE_RUNNING, sledagentv1.VmmState_VMM_STATE_REBOOTING}

func (w *twiceWatch) loop(ctx context.Context, h *harness, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		w.sample(ctx, h)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// guest is a VMM holding an instance's guest, and its sled.
type guest struct{ vmm, sled string }

// sample reads every sled twice and keeps the guests seen both times.
func (w *twiceWatch) sample(ctx context.Context, h *harness) {
	first := readGuests(ctx, h)
	second := readGuests(ctx, h)
	guests := map[string][]guest{}
	for instance, list := range second {
		for _, g := range list {
			if slices.Contains(first[instance], g) {
				guests[instance] = append(guests[instance], g)
			}
		}
	}
	at := time.Now().Format("15:04:05.000")
	var found []string
	for instance, list := range guests {
		if len(list) > 1 && !w.oneMigration(ctx, h, list) {
			var vmms []string
			for _, g := range list {
				vmms = append(vmms, g.vmm+" on sled "+g.sled)
			}
			found = append(found, fmt.Sprintf("%s: instance %s's guest runs in %d VMMs: %s", at, instance, len(list), strings.Join(vmms, ", ")))
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples++
	w.found = append(w.found, found...)
}

// readGuests reads the VMMs holding a guest on every sled that answers
// within a second (a paused or killed one does not: it is skipped), by
// instance.
func readGuests(ctx context.Context, h *harness) map[string][]guest {
	guests := map[string][]guest{}
	for _, s := range h.rack.Sleds() {
		readCtx, cancel := context.WithTimeout(ctx, time.Second)
		inv, err := s.Agent().Client.GetInventory(readCtx, &sledagentv1.GetInventoryRequest{})
		cancel()
		if err != nil {
			continue
		}
		for _, v := range inv.GetVmms() {
			if slices.Contains(guestStates, v.GetRuntime().GetState()) {
				guests[v.GetInstanceId()] = append(guests[v.GetInstanceId()], guest{vmm: v.GetVmmId(), sled: s.ID().String()})
			}
		}
	}
	return guests
}

// oneMigration says whether two guests are the source and the target of
// one migration; unknown (the database unread) counts as yes.
func (w *twiceWatch) oneMigration(ctx context.Context, h *harness, list []guest) bool {
	if len(list) != 2 {
		return false
	}
	var n int
	err := h.db.QueryRowContext(ctx, `SELECT count(*) FROM migration WHERE (source_propolis_id = $1 AND target_propolis_id = $2)
		OR (source_propolis_id = $2 AND target_propolis_id = $1)`, list[0].vmm, list[1].vmm).Scan(&n)
	return err != nil || n > 0
}

func (w *twiceWatch) verdict() verdict {
	w.mu.Lock()
	defer w.mu.Unlock()
	v := verdict{name: invRunsTwice + " (sampled from the sleds during the run)", problems: slices.Clone(w.found)}
	if w.samples == 0 {
		v.problems = append(v.problems, "no sample of the sleds' inventories was taken")
	}
	return v
}
