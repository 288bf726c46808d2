package reconciler

import (
	"context"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

// ShutdownStep is one step of taking a zone down, in the order they run.
type ShutdownStep int

const (
	StepUntrackMetrics ShutdownStep = iota + 1
	StepHaltAndRemove
	StepCleanUp
)

// ShutdownSteps lists every step in order.
var ShutdownSteps = []ShutdownStep{StepUntrackMetrics, StepHaltAndRemove, StepCleanUp}

func (s ShutdownStep) String() string {
	switch s {
	case StepUntrackMetrics:
		return "untrack metrics"
	case StepHaltAndRemove:
		return "halt and remove"
	case StepCleanUp:
		return "clean up"
	}
	return "unknown step"
}

// PresentZone is a zone the runtime holds.
type PresentZone struct {
	Zone zoneconfig.Zone
	// ResumeAt is the first shutdown step not yet done. A zone whose
	// shutdown never began (ResumeAt == StepUntrackMetrics) is running,
	// unless it exited.
	ResumeAt ShutdownStep
	// Exited, when not empty, says how the zone's process ended on its
	// own; the zone is not running, and the reconciler restarts it.
	Exited string
}

// ZoneRuntime is what the reconciler needs from the thing that runs zones.
type ZoneRuntime interface {
	// Zones lists every zone the runtime holds, running, exited or partly
	// torn down. The reconciler asks at every pass.
	Zones(ctx context.Context) ([]PresentZone, error)
	// StartZone starts a zone that is not present.
	StartZone(ctx context.Context, zone zoneconfig.Zone) error
	// Shutdown performs one shutdown step. It succeeds when the step is
	// already done, including for a zone that is gone altogether (Z7).
	Shutdown(ctx context.Context, id uuid.UUID, step ShutdownStep) error
}
