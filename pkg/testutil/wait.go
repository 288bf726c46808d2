package testutil

import (
	"fmt"
	"time"
)

// WaitFor polls cond until it returns nil or timeout passes, then fails the
// test with cond's last error.
func WaitFor(t TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatal(err)
	}
}

// Poll polls cond until it returns nil, or until timeout passes, when it
// returns cond's last error; for a caller that reports the failure itself.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	interval := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met within %s: %w", timeout, err)
		}
		time.Sleep(interval)
		if interval < 20*time.Millisecond {
			interval *= 2
		}
	}
}
