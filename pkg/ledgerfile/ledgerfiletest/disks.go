// Package ledgerfiletest plays the disks under a ledger's copies for
// tests (through ledgerfile.WithCopyWriterForTest): a hung copy's writes
// wait until released, a failing one's fail, and every write is recorded.
package ledgerfiletest

import (
	"fmt"
	"slices"
	"sync"
)

// Disks is the fake disks; the zero value is not usable, use NewDisks.
type Disks struct {
	mu       sync.Mutex
	gates    map[string]chan struct{}
	fail     map[string]error
	inFlight map[string]int
	most     map[string]int      // the most writes ever in flight at once
	started  map[string][]uint64 // generations, in the order their writes began
}

// NewDisks returns disks on which every write goes through at once.
func NewDisks() *Disks {
	return &Disks{gates: map[string]chan struct{}{}, fail: map[string]error{},
		inFlight: map[string]int{}, most: map[string]int{}, started: map[string][]uint64{}}
}

// Write is the copy writer to hand to ledgerfile.WithCopyWriterForTest.
func (d *Disks) Write(path string, generation uint64, write func() error) error {
	d.mu.Lock()
	d.inFlight[path]++
	d.most[path] = max(d.most[path], d.inFlight[path])
	d.started[path] = append(d.started[path], generation)
	gate, fail := d.gates[path], d.fail[path]
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.inFlight[path]--
		d.mu.Unlock()
	}()
	if gate != nil {
		<-gate
	}
	if fail != nil {
		return fail
	}
	return write()
}

// Hang makes the writes of path that start from now on wait until Release.
func (d *Disks) Hang(path string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gates[path] = make(chan struct{})
}

// Release lets path's hung writes go on.
func (d *Disks) Release(path string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if gate := d.gates[path]; gate != nil {
		close(gate)
		delete(d.gates, path)
	}
}

// ReleaseAll releases every hung path.
func (d *Disks) ReleaseAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for path, gate := range d.gates {
		close(gate)
		delete(d.gates, path)
	}
}

// FailWith makes path's writes fail with err; nil lets them succeed again.
func (d *Disks) FailWith(path string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.fail, path)
		return
	}
	d.fail[path] = err
}

// Idle says whether no write is in flight (nil) or which are.
func (d *Disks) Idle() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for path, n := range d.inFlight {
		if n > 0 {
			return fmt.Errorf("%d writes still in flight on %s", n, path)
		}
	}
	return nil
}

// StartedOn is the generations whose writes began on path, in order.
func (d *Disks) StartedOn(path string) []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.started[path])
}

// MostAtOnce is the most writes ever in flight on path at once.
func (d *Disks) MostAtOnce(path string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.most[path]
}
