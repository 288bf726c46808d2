package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rackplane/rackplane/services/racktest"
	"golang.org/x/sync/errgroup"
)

const (
	// retryLimit bounds how often one create or start that answered 500 or
	// 503 is sent again.
	retryLimit = 20
	// settleBound bounds how long one instance may take to settle (run, or
	// stop) after a start, stop or create.
	settleBound = 2 * time.Minute
	// progressEvery is how often progress is shown.
	progressEvery = 5 * time.Second
)

// call sends one REST request as the fleet admin; an answer that is none
// of want (when given) is an error.
func (b *bench) call(ctx context.Context, method, path, body string, want ...int) (racktest.Response, error) {
	if len(want) == 0 {
		return b.api.Do(ctx, method, path, body)
	}
	return b.api.Expect(ctx, method, path, body, want...)
}

// instanceRow is an instance as the REST API shows it.
type instanceRow struct {
	ID               string  `json:"id"`
	Name             string  `json:"name"`
	RunState         string  `json:"run_state"`
	SledReachability *string `json:"sled_reachability"`
}

// createBody is the body creating an instance of 1 vCPU and 1 GiB.
func createBody(name string, start bool) string {
	return fmt.Sprintf(`{"name": %q, "hostname": %q, "description": "scalebench", "memory": %d, "ncpus": 1, "start": %t}`,
		name, name, 1<<30, start)
}

// createOne creates and starts an instance, sending it again on 500 and
// 503 (the create saga unwound: the name is free again) and taking a 409
// after such a retry as the earlier attempt's success.
func (b *bench) createOne(ctx context.Context, name string, retries *atomic.Int64) (string, error) {
	path := "/v1/instances?project=" + project
	for attempt := 0; ; attempt++ {
		a, err := b.call(ctx, http.MethodPost, path, createBody(name, true))
		switch {
		case err != nil:
			return "", err
		case a.Status == http.StatusCreated:
			var inst instanceRow
			if err := a.JSON(&inst); err != nil || inst.ID == "" {
				return "", fmt.Errorf("creating %s: %s", name, a.Body)
			}
			return inst.ID, nil
		case a.Status == http.StatusConflict && attempt > 0:
			v, err := b.call(ctx, http.MethodGet, "/v1/instances/"+name+"?project="+project, "", http.StatusOK)
			if err != nil {
				return "", err
			}
			var inst instanceRow
			if err := v.JSON(&inst); err != nil {
				return "", err
			}
			return inst.ID, nil
		case (a.Status == http.StatusInternalServerError || a.Status == http.StatusServiceUnavailable) && attempt < retryLimit:
			retries.Add(1)
			b.noteRetry(name, a)
			if err := pause(ctx, time.Duration(attempt+1)*10*time.Millisecond); err != nil {
				return "", err
			}
		default:
			return "", fmt.Errorf("POST %s (%s): %d %s", path, name, a.Status, strings.TrimSpace(string(a.Body)))
		}
	}
}

// noteRetry keeps the first answer that made a create be sent again.
func (b *bench) noteRetry(name string, a racktest.Response) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fig.firstRetry == "" {
		b.fig.firstRetry = fmt.Sprintf("%s: %d %s", name, a.Status, strings.TrimSpace(string(a.Body)))
	}
}

// createInstances creates and starts every instance, --concurrency at a
// time, showing progress, and waits until all run.
func (b *bench) createInstances(ctx context.Context) error {
	b.watch.setPhase("create")
	n := b.o.instances
	b.say("creating and starting %d instances (1 vCPU, 1 GiB), %d at a time; %d of them reserved for start, stop and force-terminate",
		n, b.o.concurrency, b.o.reserved)
	ids := make([]string, n)
	var done, retries atomic.Int64
	began := time.Now()
	stopProgress := racktest.ShowProgress(ctx, progressEvery, func(line string) { b.say("%s", line) }, func(elapsed time.Duration) string {
		d := done.Load()
		return fmt.Sprintf("  created %d/%d (%.1f/s)", d, n, float64(d)/elapsed.Seconds())
	})
	err := parallel(ctx, n, b.o.concurrency, func(i int) error {
		// The reserved instances first: placement spreads them over the
		// least loaded sleds.
		name := fmt.Sprintf("inst-%05d", i)
		if i < b.o.reserved {
			name = fmt.Sprintf("reserved-%03d", i)
		}
		id, err := b.createOne(ctx, name, &retries)
		if err != nil {
			return err
		}
		ids[i] = id
		done.Add(1)
		return nil
	})
	stopProgress()
	if err != nil {
		return err
	}
	created := time.Since(began)
	b.reserved, b.instances = ids[:b.o.reserved], ids[b.o.reserved:]
	if err := b.waitAllRunning(ctx, began); err != nil {
		return err
	}
	b.fig.createCount, b.fig.createRetries = n, int(retries.Load())
	b.fig.createTime, b.fig.runningTime = created, time.Since(began)
	b.say("%d instances created in %s (%.1f/s), all running after %s; %d creates sent again after 500 or 503",
		n, created.Round(time.Millisecond), float64(n)/created.Seconds(), b.fig.runningTime.Round(time.Millisecond), retries.Load())
	return nil
}

// waitAllRunning polls the instance list until every instance runs.
func (b *bench) waitAllRunning(ctx context.Context, began time.Time) error {
	deadline := time.Now().Add(b.o.phaseTimeout)
	for {
		states, err := b.runStates(ctx)
		if err != nil {
			return err
		}
		notRunning := map[string]int{}
		running := 0
		for _, s := range states {
			if s == "running" {
				running++
			} else {
				notRunning[s]++
			}
		}
		if running >= b.o.instances && len(states) >= b.o.instances {
			return nil
		}
		for _, s := range []string{"failed", "stopped", "destroyed"} {
			if notRunning[s] > 0 {
				return fmt.Errorf("instances that should be starting are %s: %v", s, notRunning)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("instances not running after %s: %v", b.o.phaseTimeout, notRunning)
		}
		b.say("  running %d/%d (%.1f/s since the first create); not yet: %v", running, b.o.instances,
			float64(running)/time.Since(began).Seconds(), notRunning)
		if err := pause(ctx, time.Second); err != nil {
			return err
		}
	}
}

// runStates reads every instance's run state from the list, a page of
// 1,000 at a time.
func (b *bench) runStates(ctx context.Context) (map[string]string, error) {
	items, err := racktest.List[instanceRow](ctx, b.api, "/v1/instances?project="+project+"&limit=1000")
	states := make(map[string]string, len(items))
	for _, it := range items {
		states[it.ID] = it.RunState
	}
	return states, err
}

// parallel runs f for every index below n, at most limit at a time, and
// returns the first error; after one, no new index starts.
func parallel(ctx context.Context, n, limit int, f func(i int) error) error {
	g, failed := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for i := 0; i < n && failed.Err() == nil; i++ {
		g.Go(func() error { return f(i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}
