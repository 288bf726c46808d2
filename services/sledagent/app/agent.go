package app

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/sledagent/ledger"
	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/vmm"
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
	vmms       *vmm.Manager
}

// New returns the agent for sled over an opened ledger, a started
// reconciler and the VMM manager.
func New(sled Sled, l *ledger.ZonesLedger, r *reconciler.Reconciler, vmms *vmm.Manager) *Agent {
	return &Agent{sled: sled, ledger: l, reconciler: r, vmms: vmms}
}

// EnsureZones validates cfg (Z2) and ledgers it (Z1, Z3). It returns once the
// config is durable; the reconciler acts on it afterwards. Errors are a
// *apierror.ValidationError, a *ledger.RejectedError, or wrap
// ledger.ErrNotDurable.
func (a *Agent) EnsureZones(ctx context.Context, cfg *sledagentv1.OmicronZonesConfig) (zoneconfig.Config, error) {
	parsed, err := zoneconfig.Parse(cfg, zoneconfig.Sled{Zpools: a.sled.Zpools})
	if err != nil {
		return zoneconfig.Config{}, err
	}
	if err := a.ledger.EnsureContext(ctx, parsed); err != nil {
		return zoneconfig.Config{}, err
	}
	return parsed, nil
}

// Inventory is what the sled reports about itself (Z6).
type Inventory struct {
	Sled            Sled
	LedgeredConfig  *zoneconfig.Config
	LedgerCopies    []ledger.CopyStatus
	ReconcilerState reconciler.Status
	LastPass        *reconciler.Result
	VMMs            []vmm.View
}

// Inventory returns the sled's current inventory. It does not wait for a
// reconciler pass in progress.
func (a *Agent) Inventory() Inventory {
	inv := Inventory{Sled: a.sled}
	if cfg, ok := a.ledger.Current(); ok {
		inv.LedgeredConfig = &cfg
	}
	inv.LedgerCopies = a.ledger.CopyStatus()
	inv.ReconcilerState, inv.LastPass = a.reconciler.Snapshot()
	inv.VMMs = a.vmms.List()
	return inv
}

// EnsureRegistered registers a VMM (V1).
func (a *Agent) EnsureRegistered(reg vmm.Registration) (vmm.Runtime, error) {
	return a.vmms.EnsureRegistered(reg)
}

// EnsureState asks a VMM to move toward a target state (V2).
func (a *Agent) EnsureState(id uuid.UUID, target vmm.Target) (vmm.Runtime, error) {
	return a.vmms.EnsureState(id, target)
}

// EnsureUnregistered rudely terminates a VMM (V3); nil when unknown.
func (a *Agent) EnsureUnregistered(id uuid.UUID) *vmm.Runtime {
	return a.vmms.EnsureUnregistered(id)
}

// VMM returns a registered VMM (V4).
func (a *Agent) VMM(id uuid.UUID) (vmm.View, error) {
	return a.vmms.Get(id)
}

// ForgetVMM drops a VMM without telling nexus (V7 fault).
func (a *Agent) ForgetVMM(id uuid.UUID) error {
	if !a.vmms.Forget(id) {
		return fmt.Errorf("%w: %s", vmm.ErrNoSuchVMM, id)
	}
	return nil
}

// PokeReconciler asks for a reconciler pass now.
func (a *Agent) PokeReconciler() { a.reconciler.Poke() }
