package app

import (
	"context"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/sledagent/ledger"
	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

// Sled is the identity and hardware of the sled this agent runs on.
type Sled struct {
	ID          uuid.UUID
	NCPUs       uint32
	MemoryBytes uint64
	Zpools      []string
}

// Agent serves one sled.
type Agent struct {
	sled       Sled
	ledger     *ledger.ZonesLedger
	reconciler *reconciler.Reconciler
}

// New returns the agent for sled over an opened ledger and a started
// reconciler.
func New(sled Sled, l *ledger.ZonesLedger, r *reconciler.Reconciler) *Agent {
	return &Agent{sled: sled, ledger: l, reconciler: r}
}

// EnsureZones validates cfg (Z2) and ledgers it (Z1, Z3). It returns once the
// config is durable; the reconciler acts on it afterwards. Errors are a
// *apierror.ValidationError, a *ledger.RejectedError, or wrap
// ledger.ErrNotDurable.
func (a *Agent) EnsureZones(_ context.Context, cfg *sledagentv1.OmicronZonesConfig) (zoneconfig.Config, error) {
	parsed, err := zoneconfig.Parse(cfg, zoneconfig.Sled{Zpools: a.sled.Zpools})
	if err != nil {
		return zoneconfig.Config{}, err
	}
	if err := a.ledger.Ensure(parsed); err != nil {
		return zoneconfig.Config{}, err
	}
	return parsed, nil
}

// Inventory is what the sled reports about itself (Z6).
type Inventory struct {
	Sled            Sled
	LedgeredConfig  *zoneconfig.Config
	ReconcilerState reconciler.Status
	LastPass        *reconciler.Result
}

// Inventory returns the sled's current inventory. It does not wait for a
// reconciler pass in progress.
func (a *Agent) Inventory() Inventory {
	inv := Inventory{Sled: a.sled}
	if cfg, ok := a.ledger.Current(); ok {
		inv.LedgeredConfig = &cfg
	}
	inv.ReconcilerState, inv.LastPass = a.reconciler.Snapshot()
	return inv
}

// PokeReconciler asks for a reconciler pass now.
func (a *Agent) PokeReconciler() { a.reconciler.Poke() }
