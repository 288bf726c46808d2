// Package zoneruntime composes the sled-agent's zone runtimes: zones of the
// kinds that have a command configured run as processes
// (zoneruntime/process), the others in the simulated runtime
// (zoneruntime/sim), and faults are injected around both
// (zoneruntime/faults). One sled runs both kinds of zone at once.
package zoneruntime

import (
	"context"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/process"
)

// ByKind runs each zone in the runtime its kind belongs to.
type ByKind struct {
	Process *process.Runtime
	Sim     reconciler.ZoneRuntime
}

var _ reconciler.ZoneRuntime = ByKind{}

// Zones implements reconciler.ZoneRuntime: the zones of both runtimes.
func (b ByKind) Zones(ctx context.Context) ([]reconciler.PresentZone, error) {
	procs, err := b.Process.Zones(ctx)
	if err != nil {
		return nil, err
	}
	sims, err := b.Sim.Zones(ctx)
	if err != nil {
		return nil, err
	}
	out := append(procs, sims...)
	slices.SortFunc(out, func(a, b reconciler.PresentZone) int {
		return strings.Compare(a.Zone.ID.String(), b.Zone.ID.String())
	})
	return out, nil
}

// StartZone implements reconciler.ZoneRuntime.
func (b ByKind) StartZone(ctx context.Context, zone zoneconfig.Zone) error {
	if b.Process.Runs(zone.Kind) {
		return b.Process.StartZone(ctx, zone)
	}
	return b.Sim.StartZone(ctx, zone)
}

// Shutdown implements reconciler.ZoneRuntime: the zone goes down in the
// runtime that holds it, whatever its kind's command is now. One neither
// holds goes down in both: the process runtime still stops processes of
// it that it lost track of.
func (b ByKind) Shutdown(ctx context.Context, id uuid.UUID, step reconciler.ShutdownStep) error {
	if b.Process.Holds(id) {
		return b.Process.Shutdown(ctx, id, step)
	}
	if err := b.Sim.Shutdown(ctx, id, step); err != nil {
		return err
	}
	return b.Process.Shutdown(ctx, id, step)
}
