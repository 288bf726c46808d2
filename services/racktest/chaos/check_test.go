package chaos

import "testing"

func TestR1_AStopRacingViewsThatSeeStoppingThenStoppedIsLinearizable(t *testing.T) {
	newScript("running").
		call(0, KindStop, 10, 40, 202, "stopping").
		view(1, 5, 15, "running").
		view(1, 20, 30, "stopping").
		view(2, 25, 35, "stopping").
		view(1, 45, 50, "stopped").
		linearizable(t)
}

func TestR1_AViewOfRunningAfterAForceTerminateReturnedIsAViolation(t *testing.T) {
	newScript("running").
		call(0, KindForceTerminate, 10, 20, 200, "stopped").
		view(1, 30, 40, "running").
		violation(t)
}

func TestR1_AViewOfRunningForAnInstanceNeverStartedIsAViolation(t *testing.T) {
	newScript("stopped").
		call(0, KindStop, 10, 20, 202, "stopped").
		view(1, 30, 40, "running").
		violation(t)
}

func TestR1_AnIndeterminateStartMayHaveHappenedOrNot(t *testing.T) {
	for _, seen := range [][]string{{"running", "running"}, {"stopped", "stopped"}, {"stopped", "starting", "running"}} {
		for _, answer := range []int{503, 500, 0} {
			t.Run(seen[0]+"-"+seen[len(seen)-1], func(t *testing.T) {
				s := newScript("stopped")
				if answer == 0 {
					s.noAnswer(0, KindStart, 10, 20)
				} else {
					s.call(0, KindStart, 10, 20, answer, "")
				}
				for i, rs := range seen {
					s.view(1, int64(30+10*i), int64(35+10*i), rs)
				}
				s.linearizable(t)
			})
		}
	}
}

func TestR1_AnIndeterminateStartStillNeverShowsRunningBeforeItWasInvoked(t *testing.T) {
	newScript("stopped").
		view(1, 1, 5, "running").
		call(0, KindStart, 10, 20, 503, "").
		violation(t)
}

func TestR1_TwoConcurrentStartsBothAcceptedThenRunningIsLinearizable(t *testing.T) {
	newScript("stopped").
		call(0, KindStart, 10, 40, 202, "starting").
		call(1, KindStart, 12, 38, 202, "starting").
		view(2, 50, 60, "running").
		linearizable(t)
}

func TestR1_AStartRefusedWhileAnotherLinksItsVMMIsLinearizable(t *testing.T) {
	newScript("stopped").
		call(0, KindStart, 10, 40, 202, "running").
		call(1, KindStart, 12, 38, 409, "").
		view(2, 50, 60, "running").
		linearizable(t)
}

// A start of an instance that already has a VMM changes nothing and
// answers 202 (N7): a 409 needs a moment when it had none, and the VMM of
// a refused start never runs.
func TestR1_AStartRefusedWhileRunningIsAViolation(t *testing.T) {
	newScript("running").
		call(0, KindStart, 10, 20, 409, "").
		view(1, 30, 40, "running").
		violation(t)
	// Alone, the refusal could follow a failure no view saw.
	newScript("running").
		call(0, KindStart, 10, 20, 409, "").
		linearizable(t)
}

// Stopping a stopped instance succeeds and changes nothing (N7).
func TestR1_AStopOfAStoppedInstanceRefusedIsAViolation(t *testing.T) {
	newScript("stopped").
		call(0, KindStop, 10, 20, 409, "").
		violation(t)
}

func TestR1_ARebootOfAStoppedInstanceAcceptedIsAViolation(t *testing.T) {
	newScript("stopped").
		call(0, KindReboot, 10, 20, 202, "stopped").
		violation(t)
}

func TestR1_AViewOfRunningAfterAStopReturnedIsAViolation(t *testing.T) {
	newScript("running").
		call(0, KindStop, 10, 20, 202, "stopping").
		view(1, 30, 40, "running").
		violation(t)
}

// A stale read: once a view saw the instance stopped after its stop was
// recorded, nothing but a start can make it stopping again.
func TestR1_AStaleStoppingAfterAViewSawStoppedIsAViolation(t *testing.T) {
	newScript("running").
		call(0, KindStop, 10, 20, 202, "stopping").
		view(1, 30, 40, "stopped").
		view(2, 50, 60, "stopping").
		violation(t)
}

func TestR1_AStaleStoppingAfterAForceTerminateReturnedStoppedIsAViolation(t *testing.T) {
	newScript("running").
		view(1, 5, 15, "stopping").
		call(0, KindForceTerminate, 10, 20, 200, "stopped").
		view(1, 25, 30, "stopping").
		violation(t)
}

// F1: force-terminate answers once the instance has settled.
func TestR1_AForceTerminateAnsweringStoppingIsAViolation(t *testing.T) {
	newScript("running").
		call(0, KindForceTerminate, 10, 20, 200, "stopping").
		violation(t)
}

// F8: force-terminating a stopped instance changes nothing; it cannot
// come back failed.
func TestR1_AForceTerminateOfAStoppedInstanceAnsweringFailedIsAViolation(t *testing.T) {
	newScript("stopped").
		call(0, KindForceTerminate, 10, 20, 200, "failed").
		violation(t)
}

// F7: a force-terminate that answered 503 may have terminated the VMM or
// only recorded the wish; either way the instance ends stopped or failed.
func TestR1_AnIndeterminateForceTerminateEndsStoppedOrFailedOrNotAtAll(t *testing.T) {
	for _, end := range []string{"stopped", "failed"} {
		t.Run(end, func(t *testing.T) {
			newScript("running").
				call(0, KindForceTerminate, 10, 20, 503, "").
				view(1, 30, 40, "stopping").
				view(1, 50, 60, end).
				linearizable(t)
		})
	}
	t.Run("not at all", func(t *testing.T) {
		newScript("running").
			call(0, KindForceTerminate, 10, 20, 503, "").
			view(1, 30, 40, "running").
			linearizable(t)
	})
	t.Run("but never back to running once it showed stopping", func(t *testing.T) {
		newScript("running").
			call(0, KindForceTerminate, 10, 20, 503, "").
			view(1, 30, 40, "stopping").
			view(1, 50, 60, "running").
			violation(t)
	})
}

// The sled's rebooting reaches the database after the 202 (N4).
func TestR1_ARebootMayShowRebootingAfterItsAnswerSaidRunning(t *testing.T) {
	newScript("running").
		call(0, KindReboot, 10, 20, 202, "running").
		view(1, 30, 40, "running").
		view(1, 50, 60, "rebooting").
		view(1, 70, 80, "running").
		linearizable(t)
}

func TestR1_RebootingWithNoRebootIsAViolation(t *testing.T) {
	newScript("running").
		view(1, 30, 40, "rebooting").
		violation(t)
}

// N8: reincarnation restarts a failed instance whose policy allows it and
// whose stop is not wanted; F2: never after a force-terminate, nor (N7)
// after a stop.
func TestR1_AFailedInstanceRestartsOnlyWhenItsPolicyAllowsAndNoStopIsWanted(t *testing.T) {
	failedThenRunning := func(reincarnates bool) *script {
		s := &script{}
		s.track(vm, "running", reincarnates)
		return s.view(1, 10, 20, "failed").view(1, 30, 40, "starting").view(1, 50, 60, "running")
	}
	failedThenRunning(true).linearizable(t)
	failedThenRunning(false).violation(t)

	s := &script{}
	s.track(vm, "running", true).
		call(0, KindForceTerminate, 10, 20, 200, "failed").
		view(1, 30, 40, "starting").
		violation(t)

	// N7: an instance that failed during a stop is never reincarnated.
	s = &script{}
	s.track(vm, "running", true).
		call(0, KindStop, 10, 20, 202, "stopping").
		view(1, 30, 40, "failed").
		view(1, 50, 60, "starting").
		violation(t)
}

// N7: a start whose saga linked a VMM and then unwound answers an error
// and leaves the instance stopped.
func TestR1_AStartThatUnwoundMayShowStartingThenStopped(t *testing.T) {
	newScript("stopped").
		call(0, KindStart, 10, 60, 409, "").
		view(1, 20, 30, "starting").
		view(1, 40, 50, "stopped").
		linearizable(t)
}

func TestR1_AStartAcceptedFromStoppedNeverReturnsToStoppedWithoutAStop(t *testing.T) {
	newScript("stopped").
		call(0, KindStart, 10, 20, 202, "starting").
		view(1, 30, 40, "running").
		view(1, 50, 60, "stopped").
		violation(t)
}

func TestR1_AMigrationShowsMigratingThenRunning(t *testing.T) {
	newScript("running").
		call(0, KindMigrate, 10, 20, 200, "migrating").
		view(1, 30, 40, "migrating").
		view(1, 50, 60, "running").
		linearizable(t)
	newScript("running").
		view(1, 30, 40, "migrating").
		violation(t)
}

func TestR1_AListShowingAnInstanceRunningThatWasNeverStartedIsAViolation(t *testing.T) {
	s := newScript("stopped")
	s.f.Calls = append(s.f.Calls, Operation{Client: 1, Kind: KindList, Invoke: 10, Return: 20, Returned: true, Status: 200,
		Items: map[string]string{vm: "running", "not-tracked": "running"}})
	s.violation(t)
}

func TestR1_AViewRefusedForATrackedInstanceIsAViolation(t *testing.T) {
	newScript("running").
		call(1, KindView, 10, 20, 404, "").
		violation(t)
}

// Instances are checked apart (porcupine's partitions); a violation names
// the instance it is about.
func TestR1_AViolationNamesOnlyTheInstanceItIsAbout(t *testing.T) {
	const other = "0d6f6f6e-52c1-4d1e-9b57-6c2d1e7e2a02"
	s := newScript("stopped").track(other, "running", false)
	s.f.Calls = append(s.f.Calls,
		Operation{Client: 0, Kind: KindList, Invoke: 10, Return: 20, Returned: true, Status: 200,
			Items: map[string]string{vm: "stopped", other: "running"}},
		Operation{Client: 1, Kind: KindView, Instance: other, Invoke: 30, Return: 40, Returned: true, Status: 200,
			RunState: "rebooting"})
	res, err := s.check(t)
	if err == nil || len(res.Violating) != 1 || res.Violating[0] != other || res.Instances != 2 {
		t.Fatalf("Check = %+v, %v; want a violation of %s alone", res, err, other)
	}
}
