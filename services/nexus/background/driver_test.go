package background_test

import (
	"testing"
	"time"

	"github.com/rackplane/rackplane/services/nexus/background"
)

// TestN8_TasksOfOnePeriodTakeTurns: the passes that talk to every sled
// (inventory, zones push, instance watcher), given one period, fall at
// different points of it, at least a tenth of it apart, so that they do
// not load the sleds and the database at once.
func TestN8_TasksOfOnePeriodTakeTurns(t *testing.T) {
	const period = 10 * time.Second
	tasks := []string{"inventory", "zones_push", "instance_watcher"}
	for i, a := range tasks {
		pa := background.Phase(a, period)
		if pa < 0 || pa >= period || pa != background.Phase(a, period) {
			t.Fatalf("%s: phase %v, want the same within [0, %v) every time", a, pa, period)
		}
		for _, b := range tasks[i+1:] {
			gap := (pa - background.Phase(b, period) + period) % period
			if gap = min(gap, period-gap); gap < period/10 {
				t.Errorf("%s and %s fall %v apart in a %v period", a, b, gap, period)
			}
		}
	}
}
