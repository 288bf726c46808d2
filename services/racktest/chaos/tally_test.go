package chaos

import (
	"reflect"
	"testing"
)

func TestR1_TallyCountsCallsByKindAndOutcomeAsTheCheckClassifiesThem(t *testing.T) {
	s := newScript("running").
		call(0, KindStart, 10, 20, 202, "running").
		call(1, KindStart, 10, 20, 409, "").
		call(2, KindStop, 10, 20, 503, "").
		noAnswer(3, KindReboot, 10, 20).
		view(4, 30, 40, "running")
	h := s.history()
	h.Invoke(5, KindMigrate, vm) // never answered
	want := map[Kind]map[string]int{
		KindStart:   {"ok": 1, "refused": 1},
		KindStop:    {"indeterminate": 1},
		KindReboot:  {"indeterminate": 1},
		KindView:    {"ok": 1},
		KindMigrate: {"indeterminate": 1},
	}
	if got := h.Tally(); !reflect.DeepEqual(got, want) {
		t.Errorf("Tally() = %v, want %v", got, want)
	}
}
