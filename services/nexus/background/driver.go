package background

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Task is one kind of background work.
type Task struct {
	Name   string
	Period time.Duration
	Run    func(ctx context.Context) error
}

type runner struct {
	Task
	mu sync.Mutex // one activation at a time
}

// Driver activates tasks periodically until stopped.
type Driver struct {
	log    *zap.Logger
	tasks  map[string]*runner
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// NewDriver returns a driver for tasks; Start begins the periodic runs.
func NewDriver(log *zap.Logger, tasks ...Task) *Driver {
	d := &Driver{log: log, tasks: map[string]*runner{}}
	for _, t := range tasks {
		d.tasks[t.Name] = &runner{Task: t}
	}
	return d
}

// Start activates every task once per period, until Stop.
func (d *Driver) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	for _, r := range d.tasks {
		d.done.Add(1)
		go func() {
			defer d.done.Done()
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
	err := r.Run(ctx)
	if err != nil {
		d.log.Warn("background task failed; the next activation retries", zap.String("task", r.Name),
			zap.Duration("elapsed", time.Since(start)), zap.Error(err))
	} else {
		d.log.Debug("background task ran", zap.String("task", r.Name), zap.Duration("elapsed", time.Since(start)))
	}
	return err
}
