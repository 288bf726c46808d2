package background

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Task is one kind of background work. Run returns how many items the
// pass looked at (sleds asked, VMMs checked, rows pruned: each task says
// which), so that an operator sees a pass's time next to its size.
type Task struct {
	Name   string
	Period time.Duration
	Run    func(ctx context.Context) (items int, err error)
}

// Observer is told of every pass, periodic or explicit: metrics keep its
// duration and size.
type Observer interface {
	ObservePass(task string, elapsed time.Duration, items int, err error)
}

type runner struct {
	Task
	mu sync.Mutex // one activation at a time
}

// Driver activates tasks periodically until stopped.
type Driver struct {
	log      *zap.Logger
	observer Observer
	tasks    map[string]*runner
	cancel   context.CancelFunc
	done     sync.WaitGroup
}

// NewDriver returns a driver for tasks that tells observer of every pass;
// Start begins the periodic runs.
func NewDriver(log *zap.Logger, observer Observer, tasks ...Task) *Driver {
	d := &Driver{log: log, observer: observer, tasks: map[string]*runner{}}
	for _, t := range tasks {
		d.tasks[t.Name] = &runner{Task: t}
	}
	return d
}

// Start activates every task once per period, until Stop. Each task's
// ticks are offset by its phase, so that tasks of one period do not all
// run at once: the inventory, zones push and instance watcher passes over
// 1,000 sleds, together, held up the REST API more than each alone.
func (d *Driver) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	for _, r := range d.tasks {
		d.done.Add(1)
		go func() {
			defer d.done.Done()
			offset := time.NewTimer(Phase(r.Name, r.Period))
			select {
			case <-ctx.Done():
				offset.Stop()
				return
			case <-offset.C:
			}
			ticker := time.NewTicker(r.Period)
			defer ticker.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-ticker.C:
					d.activate(ctx, r) //nolint:errcheck // logged inside; the next tick retries
				}
			}
		}()
	}
}

// Phase is how far into its period a task's ticks fall: spread over the
// period by the task's name, the same on every start, so that tasks of one
// period take turns.
func Phase(task string, period time.Duration) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(task))
	return time.Duration(h.Sum64() % uint64(period))
}

// Stop ends the periodic runs and waits for activations under way.
func (d *Driver) Stop() {
	if d.cancel != nil {
		d.cancel()
	}
	d.done.Wait()
}

// Activate runs the named task now and returns its outcome.
func (d *Driver) Activate(ctx context.Context, name string) error {
	r, ok := d.tasks[name]
	if !ok {
		return fmt.Errorf("no background task %q", name)
	}
	return d.activate(ctx, r)
}

func (d *Driver) activate(ctx context.Context, r *runner) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	items, err := r.Run(ctx)
	elapsed := time.Since(start)
	d.observer.ObservePass(r.Name, elapsed, items, err)
	if err != nil {
		d.log.Warn("background task failed; the next activation retries", zap.String("task", r.Name),
			zap.Duration("elapsed", elapsed), zap.Int("items", items), zap.Error(err))
	} else {
		d.log.Debug("background task ran", zap.String("task", r.Name), zap.Duration("elapsed", elapsed),
			zap.Int("items", items))
	}
	return err
}
