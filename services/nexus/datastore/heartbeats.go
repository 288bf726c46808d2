package datastore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
)

// heartbeatWriteBound bounds one write of a batch of heartbeats. It is
// long: the write is the database's record for the other replicas, and a
// slow one costs nothing here, where what was heard counts at once.
const heartbeatWriteBound = 30 * time.Second

// heartbeats writes sleds' heartbeats a batch at a time, and remembers
// what this replica heard before it is written.
//
// While one batch is written, the heartbeats that arrive wait for the
// next, which is one statement for all of them: 1,000 sleds heartbeating
// every 2 s are a few statements a second, not 500 (SPEC 6). A heartbeat
// is answered once written, so every replica sees it.
//
// A database busy with other writers (SQLite's one connection behind a
// burst of creates) may take longer to write a batch than a sled may go
// unheard. A sled that heartbeats is not lost for that: whatever reads a
// sled's last-seen time through this replica takes the later of the
// database's and the last heartbeat heard here (seen), and placement also
// takes the sleds heard here whose writes lag (lagging).
type heartbeats struct {
	mu      sync.Mutex
	heard   map[uuid.UUID]time.Time // received here
	written map[uuid.UUID]time.Time // committed from here
	next    *heartbeatBatch         // collecting; nil until a heartbeat arrives
	writing bool
}

type heartbeatBatch struct {
	sleds map[uuid.UUID]bool
	done  chan struct{}
	// Outcome, once done is closed.
	unknown map[uuid.UUID]bool
	err     error
}

func newHeartbeats() *heartbeats {
	return &heartbeats{heard: map[uuid.UUID]time.Time{}, written: map[uuid.UUID]time.Time{}}
}

// SledHeartbeat records that sled is alive, with the batch of heartbeats
// it joins; model.ErrNotFound for a sled never registered (or deleted):
// its agent then registers again.
func (d *DataStore) SledHeartbeat(ctx context.Context, sled uuid.UUID) error {
	h := d.heartbeats
	h.mu.Lock()
	if h.next == nil {
		h.next = &heartbeatBatch{sleds: map[uuid.UUID]bool{}, done: make(chan struct{})}
	}
	b := h.next
	b.sleds[sled] = true
	h.heard[sled] = time.Now()
	if !h.writing {
		h.writing = true
		go d.writeHeartbeats()
	}
	h.mu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if b.err != nil {
		return b.err
	}
	if b.unknown[sled] {
		return fmt.Errorf("%w: sled %s", model.ErrNotFound, sled)
	}
	return nil
}

// writeHeartbeats writes batches until none is waiting.
func (d *DataStore) writeHeartbeats() {
	h := d.heartbeats
	for {
		h.mu.Lock()
		b := h.next
		h.next = nil
		if b == nil {
			h.writing = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		sleds := make([]uuid.UUID, 0, len(b.sleds))
		for id := range b.sleds {
			sleds = append(sleds, id)
		}
		at := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), heartbeatWriteBound)
		unknown, err := d.SledsSeen(ctx, sleds, at)
		cancel()
		b.unknown, b.err = map[uuid.UUID]bool{}, err
		for _, id := range unknown {
			b.unknown[id] = true
		}
		h.mu.Lock()
		if err == nil {
			for _, id := range sleds {
				if !b.unknown[id] && at.After(h.written[id]) {
					h.written[id] = at
				}
			}
		}
		for id := range b.unknown {
			delete(h.heard, id)
		}
		h.mu.Unlock()
		close(b.done)
	}
}

// seen is the later of a sled's last-seen time in the database and its
// last heartbeat heard here.
func (h *heartbeats) seen(sled uuid.UUID, inDatabase time.Time) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if heard := h.heard[sled]; heard.After(inDatabase) {
		return heard
	}
	return inDatabase
}

// lagging lists the sleds heard here after cutoff whose last write from
// here is older: the database alone would call them unreachable. It is
// empty while the writes keep up.
func (h *heartbeats) lagging(cutoff time.Time) []uuid.UUID {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []uuid.UUID
	for id, heard := range h.heard {
		if heard.After(cutoff) && !h.written[id].After(cutoff) {
			out = append(out, id)
		}
	}
	return out
}
