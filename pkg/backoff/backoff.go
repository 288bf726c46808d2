package backoff

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Policy describes a bounded exponential backoff with jitter.
type Policy struct {
	// Initial is the base delay before the first retry.
	Initial time.Duration
	// Max caps every delay, jitter included.
	Max time.Duration
	// Multiplier grows the base delay per attempt; values below 1 mean 2.
	Multiplier float64
	// Jitter in [0, 1] is the fraction of each delay that is randomised:
	// a delay d becomes uniform in [d*(1-Jitter), d].
	Jitter float64
}

// Validate reports a policy that cannot produce sensible delays.
func (p Policy) Validate() error {
	switch {
	case p.Initial <= 0:
		return fmt.Errorf("backoff initial delay must be positive, got %s", p.Initial)
	case p.Max < p.Initial:
		return fmt.Errorf("backoff max delay %s is below the initial delay %s", p.Max, p.Initial)
	case p.Jitter < 0 || p.Jitter > 1:
		return fmt.Errorf("backoff jitter must be within [0, 1], got %v", p.Jitter)
	}
	return nil
}

// Delay returns the delay before retry number attempt (0 for the first).
// It never exceeds Max and never goes below Initial*(1-Jitter).
func (p Policy) Delay(attempt int) time.Duration {
	mult := p.Multiplier
	if mult < 1 {
		mult = 2
	}
	d := float64(p.Initial)
	for i := 0; i < attempt && d < float64(p.Max); i++ {
		d *= mult
	}
	if d > float64(p.Max) {
		d = float64(p.Max)
	}
	if p.Jitter > 0 {
		d -= d * p.Jitter * rand.Float64()
	}
	return time.Duration(d)
}

// Sleep waits d, or until ctx ends, whichever comes first; it returns
// ctx's error in the second case.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
