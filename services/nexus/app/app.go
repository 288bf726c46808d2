package app

import (
	"context"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
)

// Nexus is the application layer of one nexus replica.
type Nexus struct {
	log   *zap.Logger
	ds    *datastore.DataStore
	sagas *saga.Engine
	sleds SledAgents

	sledRetryBound       time.Duration
	lockWaitBound        time.Duration
	forceTerminateCounts func(outcome string)
	events               func(event string, n int)
	authn                *authnCache
	replica              replica
	sledHeartbeatTimeout time.Duration
	// sledsUnreachable is what the sled liveness task last found, so
	// that it logs a sled's change, not every pass.
	sledsUnreachable map[uuid.UUID]bool
}

// SledAgents is what the application layer asks of sled-agents: what the
// sagas ask (a VMM's state among it, for the instance watcher too), and a
// sled's zones and inventory. sledclient.Pool answers it.
type SledAgents interface {
	sagas.SledAgents
	EnsureZones(ctx context.Context, sled uuid.UUID, cfg model.SledZones) error
	Inventory(ctx context.Context, sled uuid.UUID) (model.SledInventory, error)
}

// Option configures the application layer.
type Option func(*Nexus)

// WithReplica names the nexus replica this application layer runs as: what
// it claims, it claims as that replica (X3).
func WithReplica(id uuid.UUID) Option { return func(n *Nexus) { n.replica.id = id } }

// WithEventCounter is told of the events operators count (X7, N12): sagas
// this replica took over from an expunged one, orphan VMMs it unregistered.
func WithEventCounter(count func(event string, n int)) Option {
	return func(n *Nexus) { n.events = count }
}

// Events WithEventCounter is told of.
const (
	EventSagasReassigned = "sagas_reassigned"
	EventOrphanVMMReaped = "orphan_vmm_reaped"
	// EventForeignReportRefused counts sled reports about VMMs or
	// migration sides that are not the reporting sled's (S3).
	EventForeignReportRefused = "foreign_report_refused"
	// EventForceTerminateLockWait counts force-terminates that found
	// another update holding the instance's updater lock and waited (F6).
	EventForceTerminateLockWait = "force_terminate_lock_wait"
)

// WithSledRetryBound sets how long force-terminate keeps retrying a sled
// that does not answer before it gives up with 503 (F7).
func WithSledRetryBound(d time.Duration) Option { return func(n *Nexus) { n.sledRetryBound = d } }

// WithSledHeartbeatTimeout sets how long a sled may go without a
// heartbeat before it is unreachable (SPEC 6).
func WithSledHeartbeatTimeout(d time.Duration) Option {
	return func(n *Nexus) { n.sledHeartbeatTimeout = d }
}

// DefaultSledHeartbeatTimeout is WithSledHeartbeatTimeout's default.
const DefaultSledHeartbeatTimeout = 7 * time.Second

// WithLockWaitBound sets how long force-terminate waits for another update
// holding the instance's updater lock before it answers 503 naming the
// holder (F6).
func WithLockWaitBound(d time.Duration) Option { return func(n *Nexus) { n.lockWaitBound = d } }

// WithAuthnCacheTTL sets how long a token's caller and roles are remembered
// after the database resolved them; 0 resolves every request afresh.
func WithAuthnCacheTTL(d time.Duration) Option { return func(n *Nexus) { n.authn = newAuthnCache(d) } }

// WithForceTerminateCounter is told the outcome of every force-terminate,
// for the metric of F12.
func WithForceTerminateCounter(count func(outcome string)) Option {
	return func(n *Nexus) { n.forceTerminateCounts = count }
}

// New returns the application layer over ds. engine and sleds may be nil
// for an operator command that only touches the database (minting tokens).
func New(ds *datastore.DataStore, engine *saga.Engine, sleds SledAgents, log *zap.Logger, opts ...Option) *Nexus {
	n := &Nexus{log: log, ds: ds, sagas: engine, sleds: sleds,
		sledRetryBound: defaultSledRetryBound, lockWaitBound: defaultLockWaitBound, forceTerminateCounts: func(string) {}, events: func(string, int) {},
		authn:   newAuthnCache(0),
		replica: replica{expunged: make(chan struct{})}, sledHeartbeatTimeout: DefaultSledHeartbeatTimeout,
		sledsUnreachable: map[uuid.UUID]bool{}}
	for _, opt := range opts {
		opt(n)
	}
	return n
}

// UpdateInstanceInBackground starts an instance update saga (N6) without
// waiting for it. If another update holds the instance's updater lock, this
// one ends at once and the holder (or the background updater) does the work.
func (n *Nexus) UpdateInstanceInBackground(instance uuid.UUID) {
	if n.sagas == nil {
		return
	}
	if _, err := n.sagas.Start(context.Background(), sagas.InstanceUpdate,
		sagas.InstanceUpdateParams{Instance: instance}); err != nil {
		n.log.Warn("could not start an instance update saga", zap.Stringer("instance_id", instance), zap.Error(err))
	}
}
