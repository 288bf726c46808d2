package backoff

import (
	"testing"
	"time"
)

func TestDelayGrowsToTheCapAndStaysWithinJitterBounds(t *testing.T) {
	p := Policy{Initial: 10 * time.Millisecond, Max: 1 * time.Second, Jitter: 0.5}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; attempt < 100; attempt++ {
		base := 10 * time.Millisecond << min(attempt, 20)
		if base > time.Second {
			base = time.Second
		}
		for i := 0; i < 50; i++ {
			d := p.Delay(attempt)
			if d > p.Max || d > base || d < base/2 {
				t.Fatalf("attempt %d: delay %s outside [%s, %s]", attempt, d, base/2, base)
			}
		}
	}
}

func TestValidateRejectsNonsense(t *testing.T) {
	for _, p := range []Policy{
		{Initial: 0, Max: time.Second},
		{Initial: time.Second, Max: time.Millisecond},
		{Initial: time.Millisecond, Max: time.Second, Jitter: 1.5},
	} {
		if p.Validate() == nil {
			t.Errorf("policy %+v accepted", p)
		}
	}
}
