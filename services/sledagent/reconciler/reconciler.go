package reconciler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

// ZoneState is where a tracked zone stands.
type ZoneState int

const (
	ZoneRunning ZoneState = iota + 1
	ZonePartiallyShutDown
	ZoneFailedToStart
	// ZoneExited is a zone whose process ended on its own; it is restarted
	// once its backoff has passed.
	ZoneExited
)

func (s ZoneState) String() string {
	switch s {
	case ZoneRunning:
		return "running"
	case ZonePartiallyShutDown:
		return "partially shut down"
	case ZoneFailedToStart:
		return "failed to start"
	case ZoneExited:
		return "exited"
	}
	return "unknown"
}

// Phase is what the reconciler is doing.
type Phase int

const (
	PhaseNotYetRun Phase = iota
	PhaseRunning
	PhaseIdle
)

// Status is the reconciler's current activity.
type Status struct {
	Phase Phase
	// Generation and StartedAt describe the pass under way (PhaseRunning).
	Generation uint64
	StartedAt  time.Time
	// CompletedAt and Duration describe the last pass (PhaseIdle).
	CompletedAt time.Time
	Duration    time.Duration
}

// ZoneResult is one zone still present after a pass. Err is empty when the
// zone is running as configured.
type ZoneResult struct {
	Zone     zoneconfig.Zone
	State    ZoneState
	Step     ShutdownStep // the failed step, when State is ZonePartiallyShutDown
	Err      string
	Attempts int
}

// Result is the outcome of a completed pass.
type Result struct {
	Generation  uint64
	CompletedAt time.Time
	Zones       []ZoneResult // sorted by zone id
}

// DefaultShutdownTimeout bounds one shutdown step when Config leaves it
// unset: long enough for a process zone's SIGTERM, grace and SIGKILL.
const DefaultShutdownTimeout = 60 * time.Second

// Config tunes the reconciler.
type Config struct {
	// Retry spaces the passes that follow a pass which left errors.
	Retry backoff.Policy
	// ShutdownTimeout bounds each shutdown step of a zone (zero:
	// DefaultShutdownTimeout). A step that outlasts it fails (Z5), so one
	// hung zone cannot hold up every pass after it.
	ShutdownTimeout time.Duration
}

type trackedZone struct {
	zone     zoneconfig.Zone
	state    ZoneState
	step     ShutdownStep // next step to run, when partially shut down
	lastErr  string
	attempts int
	// startedAt is when the reconciler last started (or adopted) it.
	startedAt time.Time
	// retryAt is when a zone that exited or failed to start may be
	// started again: its backoff, drawn once when it entered that state.
	retryAt time.Time
	// stepCall is a shutdown step that outlasted its bound and has not
	// returned yet; nil when none is outstanding.
	stepCall *stepCall
}

// stepCall is one runtime Shutdown call, run on its own goroutine so that
// the reconciler can stop waiting for it.
type stepCall struct {
	done chan struct{} // closed once the call returned and err is set
	err  error
}

// Reconciler is the handle to the reconciliation loop.
type Reconciler struct {
	log     *zap.Logger
	runtime ZoneRuntime
	retry   backoff.Policy
	// shutdownTimeout bounds one shutdown step.
	shutdownTimeout time.Duration
	trigger         chan struct{}

	mu      sync.Mutex
	desired *zoneconfig.Config
	status  Status
	last    *Result

	// Owned by the loop goroutine.
	zones map[uuid.UUID]*trackedZone
	// Consecutive failed starts of each wanted zone; a failed start is
	// cleaned up (shut down) before the next try, so the count lives here
	// rather than in the tracked zone.
	startFailures map[uuid.UUID]int
	// Exits of each wanted zone's process in a row, each restart waiting
	// retry.Delay(exits-1); forgotten when the zone exits after running
	// for longer than retry.Max.
	exits map[uuid.UUID]int

	// calls counts the runtime Shutdown calls still running, those the
	// reconciler gave up waiting for included.
	calls sync.WaitGroup

	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a reconciler over runtime; call Start to run it.
func New(runtime ZoneRuntime, cfg Config, log *zap.Logger) (*Reconciler, error) {
	if err := cfg.Retry.Validate(); err != nil {
		return nil, err
	}
	if cfg.ShutdownTimeout < 0 {
		return nil, fmt.Errorf("shutdown timeout must be positive, got %s", cfg.ShutdownTimeout)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	return &Reconciler{
		log:             log,
		runtime:         runtime,
		retry:           cfg.Retry,
		shutdownTimeout: cfg.ShutdownTimeout,
		trigger:         make(chan struct{}, 1),
		zones:           map[uuid.UUID]*trackedZone{},

		startFailures: map[uuid.UUID]int{},
		exits:         map[uuid.UUID]int{},
		done:          make(chan struct{}),
	}, nil
}

// Start adopts the zones the runtime already holds (Z8) and starts the loop.
// desired is the ledgered config, if there is one; without one the reconciler
// waits (NOT_YET_RUN) rather than tear down zones it knows nothing about.
func (r *Reconciler) Start(ctx context.Context, desired *zoneconfig.Config) error {
	present, err := r.runtime.Zones(ctx)
	if err != nil {
		return fmt.Errorf("listing the zones the runtime holds: %w", err)
	}
	now := time.Now()
	for _, p := range present {
		tz := &trackedZone{zone: p.Zone, state: ZoneRunning, startedAt: now}
		if p.ResumeAt != StepUntrackMetrics {
			tz.state, tz.step = ZonePartiallyShutDown, p.ResumeAt
			tz.lastErr = fmt.Sprintf("found partially shut down at startup; resuming at %s", p.ResumeAt)
		}
		r.zones[p.Zone.ID] = tz
		r.noteExit(tz, p, now)
		r.log.Info("adopted zone from runtime", zap.Stringer("zone_id", p.Zone.ID),
			zap.String("kind", string(p.Zone.Kind)), zap.Stringer("state", tz.state))
	}
	if desired != nil {
		r.SetDesired(*desired)
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	go r.loop(loopCtx)
	return nil
}

// Stop ends the loop, interrupting runtime calls in flight, and waits for it
// and for them.
func (r *Reconciler) Stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	// The agent closes the runtime once the reconciler has stopped; a
	// shutdown step the loop gave up on must not still be writing to it.
	// Cancelled, a runtime that honours its context returns at once.
	r.calls.Wait()
}

// SetDesired hands the reconciler a newly ledgered config. Configs older than
// the one it already has are ignored.
func (r *Reconciler) SetDesired(cfg zoneconfig.Config) {
	r.mu.Lock()
	if r.desired != nil && cfg.Generation < r.desired.Generation {
		r.mu.Unlock()
		return
	}
	r.desired = &cfg
	r.mu.Unlock()
	r.Poke()
}

// Poke asks for a pass as soon as the current one (if any) ends.
func (r *Reconciler) Poke() {
	select {
	case r.trigger <- struct{}{}:
	default: // a pass is already pending
	}
}

// Snapshot returns the current status and the last completed pass's result
// (nil before the first pass). Neither is modified afterwards.
func (r *Reconciler) Snapshot() (Status, *Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status, r.last
}

func (r *Reconciler) loop(ctx context.Context) {
	defer close(r.done)
	retry := time.NewTimer(0)
	if !retry.Stop() {
		<-retry.C
	}
	failedPasses := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.trigger:
		case <-retry.C:
		}
		r.mu.Lock()
		desired := r.desired
		r.mu.Unlock()
		if desired == nil {
			continue
		}
		if next, errored := r.pass(ctx, *desired); errored {
			delay := r.retry.Delay(failedPasses)
			failedPasses++
			// A zone waiting out its own backoff is started when that
			// ends, not a whole pass delay later.
			if !next.IsZero() && time.Until(next) < delay {
				delay = max(time.Until(next), 0)
			}
			retry.Reset(delay)
			r.log.Info("reconciler pass left errors; retrying", zap.Duration("after", delay),
				zap.Int("consecutive_failed_passes", failedPasses))
		} else {
			failedPasses = 0
			retry.Stop()
		}
	}
}

// pass runs one reconciliation against desired and reports whether any zone
// was left in error, and the earliest time a zone waiting out its backoff
// may be started again (zero if none waits).
func (r *Reconciler) pass(ctx context.Context, desired zoneconfig.Config) (time.Time, bool) {
	started := time.Now()
	r.mu.Lock()
	r.status = Status{Phase: PhaseRunning, Generation: desired.Generation, StartedAt: started}
	r.mu.Unlock()

	r.findExits(ctx, started)
	shutdownFailed := r.shutDownUnwanted(ctx, desired)
	if shutdownFailed {
		r.log.Warn("not starting zones: a shutdown failed in this pass", zap.Uint64("generation", desired.Generation))
	} else {
		r.startMissing(ctx, desired)
	}

	result := r.result(desired.Generation)
	errored := 0
	for _, z := range result.Zones {
		if z.Err != "" {
			errored++
		}
	}
	completed := time.Now()
	r.log.Info("reconciler pass completed", zap.Uint64("generation", desired.Generation),
		zap.Int("zones", len(result.Zones)), zap.Int("zones_in_error", errored),
		zap.Duration("duration", completed.Sub(started)))
	result.CompletedAt = completed
	r.mu.Lock()
	r.last = result
	r.status = Status{Phase: PhaseIdle, CompletedAt: completed, Duration: completed.Sub(started)}
	r.mu.Unlock()
	var next time.Time
	for _, tz := range r.zones {
		waiting := tz.state == ZoneFailedToStart || tz.state == ZoneExited
		if waiting && tz.retryAt.After(completed) && (next.IsZero() || tz.retryAt.Before(next)) {
			next = tz.retryAt
		}
	}
	return next, errored > 0
}

// shutDownUnwanted shuts down, concurrently, every tracked zone that must go
// before the sled matches desired. It reports whether any shutdown failed.
func (r *Reconciler) shutDownUnwanted(ctx context.Context, desired zoneconfig.Config) bool {
	var victims []*trackedZone
	for id, tz := range r.zones {
		want, wanted := desired.Zone(id)
		switch {
		case !wanted:
		case tz.state == ZonePartiallyShutDown:
			// Wanted again: it must finish shutting down before it starts.
		case tz.state == ZoneFailedToStart, tz.state == ZoneExited:
			// Clear whatever the failed start or the exit left, then start
			// it again, once its backoff has passed.
			if time.Now().Before(tz.retryAt) {
				continue
			}
		case tz.zone != want:
			// Its config changed: restart it.
		default:
			continue
		}
		victims = append(victims, tz)
	}
	var wg sync.WaitGroup
	failed := make([]bool, len(victims))
	for i, tz := range victims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			failed[i] = !r.shutDown(ctx, tz)
		}()
	}
	wg.Wait()
	anyFailed := false
	for i, tz := range victims {
		if failed[i] {
			anyFailed = true
			continue
		}
		delete(r.zones, tz.zone.ID)
		if _, wanted := desired.Zone(tz.zone.ID); !wanted {
			delete(r.startFailures, tz.zone.ID)
			delete(r.exits, tz.zone.ID)
		}
	}
	return anyFailed
}

// shutDown runs the remaining shutdown steps of tz, updating it in place on
// failure. It reports whether the zone is now gone.
func (r *Reconciler) shutDown(ctx context.Context, tz *trackedZone) bool {
	first := StepUntrackMetrics
	if tz.state == ZonePartiallyShutDown {
		first = tz.step
	}
	wasExited := tz.state == ZoneExited
	log := r.log.With(zap.Stringer("zone_id", tz.zone.ID), zap.String("kind", string(tz.zone.Kind)))
	for _, step := range ShutdownSteps {
		if step < first {
			continue
		}
		if err := r.shutdownStep(ctx, tz, step); err != nil {
			if tz.state != ZonePartiallyShutDown {
				tz.attempts = 0
			}
			// A failed shutdown is retried with the passes' backoff; the
			// zone no longer waits out a restart backoff of its own.
			tz.state, tz.step, tz.retryAt = ZonePartiallyShutDown, step, time.Time{}
			tz.lastErr = fmt.Sprintf("%s: %v", step, err)
			tz.attempts++
			log.Warn("zone shutdown failed; the zone stays tracked", zap.Stringer("step", step),
				zap.Int("attempts", tz.attempts), zap.Error(err))
			return false
		}
	}
	if wasExited {
		log.Info("cleared an exited zone; starting it again")
	} else {
		log.Info("zone shut down")
	}
	return true
}

// errStepTimedOut marks a shutdown step that outlasted the reconciler's
// bound.
var errStepTimedOut = errors.New("shutdown timed out")

// shutdownStep runs one shutdown step of tz within the shutdown bound. A
// step that outlasts it fails like any other failed step (Z5): the zone
// stays tracked and in error, the pass goes on and the next one retries.
//
// The runtime is asked to stop at the deadline (its context), but nothing
// obliges it to, and a second halt racing a first one of the same zone
// could, say, signal a process the first one is still reaping. So the call
// runs on a goroutine of its own, a call that outlasts the bound stays on
// tz, and no other step of that zone starts until it has returned: a retry
// first waits for it, within the same bound, and times out again without
// calling the runtime if it is still running. Once it has returned the
// step is run again rather than its late result trusted: steps are
// idempotent, and the zone may have changed since.
func (r *Reconciler) shutdownStep(ctx context.Context, tz *trackedZone, step ShutdownStep) error {
	stepCtx, cancel := context.WithTimeout(ctx, r.shutdownTimeout)
	defer cancel()
	if prev := tz.stepCall; prev != nil {
		select {
		case <-prev.done:
			tz.stepCall = nil
		case <-stepCtx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w after %s: the previous attempt has still not returned", errStepTimedOut, r.shutdownTimeout)
		}
	}
	call := &stepCall{done: make(chan struct{})}
	r.calls.Add(1)
	go func() {
		defer r.calls.Done()
		defer close(call.done)
		call.err = r.runtime.Shutdown(stepCtx, tz.zone.ID, step)
	}()
	select {
	case <-call.done:
		// A runtime that honours the deadline returns its own error for
		// it; report it as the timeout it is.
		if call.err != nil && ctx.Err() == nil && errors.Is(stepCtx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%w after %s: %v", errStepTimedOut, r.shutdownTimeout, call.err)
		}
		return call.err
	case <-stepCtx.Done():
		tz.stepCall = call
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w after %s", errStepTimedOut, r.shutdownTimeout)
	}
}

// startMissing starts, concurrently, every desired zone not tracked.
func (r *Reconciler) startMissing(ctx context.Context, desired zoneconfig.Config) {
	var missing []zoneconfig.Zone
	for _, z := range desired.Zones {
		if _, tracked := r.zones[z.ID]; !tracked {
			missing = append(missing, z)
		}
	}
	errs := make([]error, len(missing))
	var wg sync.WaitGroup
	for i, z := range missing {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.runtime.StartZone(ctx, z)
		}()
	}
	wg.Wait()
	for i, z := range missing {
		if errs[i] == nil {
			r.zones[z.ID] = &trackedZone{zone: z, state: ZoneRunning, startedAt: time.Now()}
			delete(r.startFailures, z.ID)
			continue
		}
		r.startFailures[z.ID]++
		backoff := r.retry.Delay(r.startFailures[z.ID] - 1)
		r.zones[z.ID] = &trackedZone{zone: z, state: ZoneFailedToStart, retryAt: time.Now().Add(backoff),
			lastErr: fmt.Sprintf("start: %v", errs[i]), attempts: r.startFailures[z.ID]}
		r.log.Warn("zone failed to start; trying again after a backoff", zap.Stringer("zone_id", z.ID),
			zap.String("kind", string(z.Kind)), zap.Int("attempts", r.startFailures[z.ID]),
			zap.Duration("backoff", backoff), zap.Error(errs[i]))
	}
}

// findExits asks the runtime which running zones' processes ended on their
// own.
func (r *Reconciler) findExits(ctx context.Context, now time.Time) {
	present, err := r.runtime.Zones(ctx)
	if err != nil {
		r.log.Warn("listing the runtime's zones; exits go unnoticed this pass", zap.Error(err))
		return
	}
	for _, p := range present {
		if tz, ok := r.zones[p.Zone.ID]; ok {
			r.noteExit(tz, p, now)
		}
	}
}

// noteExit marks a running zone whose process the runtime found exited. A
// zone that ran for longer than the longest backoff before it exited starts
// counting its exits anew.
func (r *Reconciler) noteExit(tz *trackedZone, p PresentZone, now time.Time) {
	if p.Exited == "" || tz.state != ZoneRunning {
		return
	}
	if now.Sub(tz.startedAt) > r.retry.Max {
		delete(r.exits, tz.zone.ID)
	}
	r.exits[tz.zone.ID]++
	backoff := r.retry.Delay(r.exits[tz.zone.ID] - 1)
	tz.state, tz.retryAt, tz.attempts = ZoneExited, now.Add(backoff), r.exits[tz.zone.ID]
	tz.lastErr = "exited on its own: " + p.Exited
	r.log.Warn("zone exited on its own; restarting it after a backoff", zap.Stringer("zone_id", tz.zone.ID),
		zap.String("kind", string(tz.zone.Kind)), zap.String("exit", p.Exited), zap.Int("exits", tz.attempts),
		zap.Duration("backoff", backoff))
}

func (r *Reconciler) result(generation uint64) *Result {
	res := &Result{Generation: generation}
	for _, tz := range r.zones {
		zr := ZoneResult{Zone: tz.zone, State: tz.state}
		if tz.state != ZoneRunning {
			zr.Err, zr.Attempts = tz.lastErr, tz.attempts
			if tz.state == ZonePartiallyShutDown {
				zr.Step = tz.step
			}
		}
		res.Zones = append(res.Zones, zr)
	}
	slices.SortFunc(res.Zones, func(a, b ZoneResult) int {
		return strings.Compare(a.Zone.ID.String(), b.Zone.ID.String())
	})
	return res
}
