package datastore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
)

const (
	// heartbeatWriteBound bounds one write of a batch of heartbeats. It
	// is long: the write is the database's record for the other replicas,
	// and each heartbeat is written at the time it was heard, however
	// late the write.
	heartbeatWriteBound = 30 * time.Second
	// heartbeatLinger is how long a batch collects heartbeats before its
	// write: on a fast database a batch would otherwise be one heartbeat,
	// and 1,000 sleds every 2 s 500 commits a second.
	heartbeatLinger = 100 * time.Millisecond
)

// heartbeats writes sleds' heartbeats a batch at a time, and remembers
// what this replica heard before it is written.
//
// A batch collects heartbeats for heartbeatLinger, and while the one
// before it is written; then one statement writes them all, each at the
// time it was heard: 1,000 sleds heartbeating every 2 s are at most ten
// statements a second, not 500 (SPEC 6). A heartbeat is answered once
// written, so every replica sees it.
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
	// beforeWrite, in tests, is called as a batch's write begins.
	beforeWrite func()
}

type heartbeatBatch struct {
	heard map[uuid.UUID]time.Time
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
		h.next = &heartbeatBatch{heard: map[uuid.UUID]time.Time{}, done: make(chan struct{})}
	}
	b := h.next
	now := time.Now()
	b.heard[sled], h.heard[sled] = now, now
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
		time.Sleep(heartbeatLinger)
		h.mu.Lock()
		b := h.next
		h.next = nil
		if b == nil {
			h.writing = false
			h.mu.Unlock()
			return
		}
		before := h.beforeWrite
		h.mu.Unlock()
		if before != nil {
			before()
		}
		ctx, cancel := context.WithTimeout(context.Background(), heartbeatWriteBound)
		unknown, err := d.SledsSeen(ctx, b.heard)
		cancel()
		b.unknown, b.err = map[uuid.UUID]bool{}, err
		for _, id := range unknown {
			b.unknown[id] = true
		}
		h.mu.Lock()
		for id, at := range b.heard {
			switch {
			case b.unknown[id]:
				// Unless heard again since: the agent registered again.
				if h.heard[id].Equal(at) {
					delete(h.heard, id)
				}
			case err == nil && at.After(h.written[id]):
				h.written[id] = at
			}
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
