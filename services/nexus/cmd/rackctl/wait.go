package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// pollPeriod is how often --wait looks at the instance.
const pollPeriod = 200 * time.Millisecond

// goal is where --wait waits for an instance to settle: the states that
// end the wait, and those from which it will not get there by itself.
type goal struct {
	want     []string
	hopeless []string
}

var (
	// A start that fails leaves the instance failed, or stopped once the
	// start saga unwound.
	toRunning = goal{want: []string{"running"}, hopeless: []string{"failed", "stopped", "destroyed"}}
	// A stop or force-terminate settles stopped, or failed when the sled
	// had lost the VMM (F1).
	toStopped = goal{want: []string{"stopped", "failed"}, hopeless: []string{"destroyed"}}
)

func (g goal) String() string { return strings.Join(g.want, " or ") }

// follow runs act (a call answered by the instance), then polls the
// instance until it reaches g, printing one line per state it moves to
// (from before, the state before act; "" if it did not exist), and
// returns the body of the instance as it settled. It gives up after
// --timeout.
func (w waitFlags) follow(cmd *cobra.Command, c *client, r instanceRef, g goal, before string, act func() ([]byte, error)) ([]byte, error) {
	began := time.Now()
	body, err := act()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), w.timeout)
	defer cancel()
	tick := time.NewTicker(pollPeriod)
	defer tick.Stop()
	progress := cmd.ErrOrStderr()
	state := before
	for {
		now := stateOf(body)
		if now != state {
			say(progress, r, state, now, time.Since(began))
			state = now
		}
		switch {
		case slices.Contains(g.want, now):
			return body, nil
		case slices.Contains(g.hopeless, now):
			return nil, fmt.Errorf("%s is %s: it will not be %s by itself", r, now, g)
		}
		select {
		case <-ctx.Done():
			return nil, w.gaveUp(cmd.Context(), r, now, g)
		case <-tick.C:
		}
		if body, err = c.instanceView(ctx, r); err != nil {
			if ctx.Err() != nil {
				return nil, w.gaveUp(cmd.Context(), r, now, g)
			}
			return nil, err
		}
	}
}

// gaveUp says why the wait ended early: an interrupt, or --timeout.
func (w waitFlags) gaveUp(parent context.Context, r instanceRef, state string, g goal) error {
	if err := parent.Err(); err != nil {
		return fmt.Errorf("interrupted while waiting for %s to be %s (it is %s): %w", r, g, state, err)
	}
	return fmt.Errorf("%s is still %s after %s (--timeout); it was to be %s", r, state, w.timeout, g)
}

// say prints one state change: "demo/web: starting → running (1.2s)".
func say(w io.Writer, r instanceRef, from, to string, after time.Duration) {
	change := to
	if from != "" {
		change = from + " → " + to
	}
	fmt.Fprintf(w, "%s: %s (%.1fs)\n", r, change, after.Seconds())
}

// stateOf is an instance's run_state; "" if the body is not an instance.
func stateOf(body []byte) string {
	i, err := decode[instanceJSON](body)
	if err != nil {
		return ""
	}
	return i.RunState
}
