// Package process is the zone runtime that runs a zone as a supervised
// operating-system process (SPEC Z10): nexus replicas first. Each zone kind
// that has a command in the sled-agent's config runs here; the others stay
// in the simulated runtime (zoneruntime.ByKind).
//
// A zone lives in its own directory, <root>/<pool>/zones/<zone id>, with
// its log (zone.log) and its record (zone.json): the zone's config, the
// process id and the process's start time read from /proc, and how far its
// shutdown has gone. The record is what survives the sled-agent: after a
// restart (kill -9 included) the runtime adopts each recorded process that
// still runs with the recorded start time, so it never starts a second copy
// and never takes a recycled pid for its zone. Zone processes run in their
// own process group, so they outlive the agent like zones outlive a real
// sled-agent, and a signal to the agent's terminal does not reach them.
//
// Starting returns once the process has run for a short grace period
// without exiting; stopping (the halt step) sends SIGTERM to the zone's
// process group, then SIGKILL after a bound, and succeeds only once the
// process is really gone. A zone that is gone already is shut down (Z7). A
// process that exits on its own is reported (PresentZone.Exited) and the
// runtime pokes the reconciler, which restarts it after a backoff.
package process

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

// Config says where zones live and what runs for each kind.
type Config struct {
	// Root holds every pool's zones: <Root>/<pool>/zones/<zone id>.
	Root string
	// Commands is the command line (program and arguments) of each kind
	// run as a process.
	Commands map[zoneconfig.Kind][]string
	// StopBound is how long a zone has to exit after SIGTERM before it is
	// sent SIGKILL.
	StopBound time.Duration
	// StartGrace is how long a new zone's process must run for its start
	// to succeed; one that exits sooner failed to start.
	StartGrace time.Duration
	// PollPeriod is how often adopted processes (not this agent's
	// children, so not waitable) are checked for an exit.
	PollPeriod time.Duration
	Log        *zap.Logger
}

const (
	recordFile = "zone.json"
	logFile    = "zone.log"
)

// record is a zone as its zone.json keeps it.
type record struct {
	Zone zoneconfig.Zone `json:"zone"`
	Pid  int             `json:"pid"`
	// StartTicks is the process's start time, in clock ticks since boot
	// (/proc/<pid>/stat, field 22): with the pid, the process's identity.
	StartTicks     uint64 `json:"start_ticks"`
	MetricsTracked bool   `json:"metrics_tracked"`
	Running        bool   `json:"running"`
}

// zoneProc is a zone the runtime holds.
type zoneProc struct {
	rec record
	dir string
	// exited closes when the process has gone, however; exit says how.
	exited chan struct{}
	exit   string
	// halting: the exit is the runtime's own doing, not the zone's.
	halting bool
	// child: this runtime started the process and its reaper watches it;
	// otherwise it was adopted and is polled.
	child bool
}

// Runtime runs zones as processes.
type Runtime struct {
	cfg    Config
	log    *zap.Logger
	onExit func()

	mu    sync.Mutex
	zones map[uuid.UUID]*zoneProc

	stop chan struct{}
	done sync.WaitGroup
}

var _ reconciler.ZoneRuntime = (*Runtime)(nil)

// Open returns the runtime over cfg.Root with the zones found there: those
// whose process still runs are adopted, the others are reported exited (or,
// if their shutdown had begun, resumed where it stopped).
func Open(cfg Config) (*Runtime, error) {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	r := &Runtime{cfg: cfg, log: cfg.Log, onExit: func() {}, zones: map[uuid.UUID]*zoneProc{}, stop: make(chan struct{})}
	records, err := filepath.Glob(filepath.Join(cfg.Root, "*", "zones", "*", recordFile))
	if err != nil {
		return nil, err
	}
	for _, path := range records {
		var rec record
		data, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(data, &rec)
		}
		if err != nil {
			// A record is written whole (temporary file, rename): an
			// unreadable one is not the runtime's.
			r.log.Warn("ignoring an unreadable zone record", zap.String("path", path), zap.Error(err))
			continue
		}
		z := &zoneProc{rec: rec, dir: filepath.Dir(path), exited: make(chan struct{})}
		switch {
		case !rec.Running:
			close(z.exited)
		case alive(rec.Pid, rec.StartTicks):
			r.log.Info("adopted zone process", zap.Stringer("zone_id", rec.Zone.ID), zap.Int("pid", rec.Pid))
		default:
			z.exit = fmt.Sprintf("process %d is gone (it ended while the sled-agent was away)", rec.Pid)
			close(z.exited)
		}
		r.zones[rec.Zone.ID] = z
	}
	r.done.Add(1)
	go r.watchAdopted()
	return r, nil
}

// OnExit sets what the runtime calls when a zone's process exits on its
// own: the reconciler's poke.
func (r *Runtime) OnExit(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onExit = f
}

// Runs reports whether zones of kind run here.
func (r *Runtime) Runs(kind zoneconfig.Kind) bool { return len(r.cfg.Commands[kind]) > 0 }

// Holds reports whether the zone is this runtime's.
func (r *Runtime) Holds(id uuid.UUID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.zones[id]
	return ok
}

// Close stops watching the zones; their processes keep running, for the
// next Open to adopt.
func (r *Runtime) Close() error {
	close(r.stop)
	r.done.Wait()
	return nil
}

// Zones implements reconciler.ZoneRuntime.
func (r *Runtime) Zones(context.Context) ([]reconciler.PresentZone, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]reconciler.PresentZone, 0, len(r.zones))
	for _, z := range r.zones {
		p := reconciler.PresentZone{Zone: z.rec.Zone, ResumeAt: z.resumeAt()}
		if z.rec.Running && !z.halting && z.gone() {
			p.Exited = z.exit
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b reconciler.PresentZone) int {
		return strings.Compare(a.Zone.ID.String(), b.Zone.ID.String())
	})
	return out, nil
}

func (z *zoneProc) resumeAt() reconciler.ShutdownStep {
	switch {
	case z.rec.MetricsTracked:
		return reconciler.StepUntrackMetrics
	case z.rec.Running:
		return reconciler.StepHaltAndRemove
	default:
		return reconciler.StepCleanUp
	}
}

func (z *zoneProc) gone() bool {
	select {
	case <-z.exited:
		return true
	default:
		return false
	}
}

// StartZone implements reconciler.ZoneRuntime. A zone whose process already
// runs is left running: never a second copy.
func (r *Runtime) StartZone(ctx context.Context, zone zoneconfig.Zone) error {
	argv := r.cfg.Commands[zone.Kind]
	if len(argv) == 0 {
		return fmt.Errorf("no command is configured for %s zones", zone.Kind)
	}
	r.mu.Lock()
	if z, ok := r.zones[zone.ID]; ok && !z.gone() {
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()
	dir := filepath.Join(r.cfg.Root, zone.FilesystemPool, "zones", zone.ID.String())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own descriptor
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, out, out
	cmd.Env = append(os.Environ(), zoneEnv(zone, dir)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s zone %s: %w", zone.Kind, zone.ID, err)
	}
	ticks, err := startTicks(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill() //nolint:errcheck // it is being abandoned
		cmd.Wait()         //nolint:errcheck // reaped
		return fmt.Errorf("reading the start time of zone %s's process: %w", zone.ID, err)
	}
	z := &zoneProc{dir: dir, exited: make(chan struct{}), child: true,
		rec: record{Zone: zone, Pid: cmd.Process.Pid, StartTicks: ticks, MetricsTracked: true, Running: true}}
	if err := writeRecord(dir, z.rec); err != nil {
		cmd.Process.Kill() //nolint:errcheck // it is being abandoned
		cmd.Wait()         //nolint:errcheck // reaped
		return err
	}
	r.mu.Lock()
	r.zones[zone.ID] = z
	r.mu.Unlock()
	go r.reap(z, cmd)
	select {
	case <-z.exited:
		return fmt.Errorf("%s zone %s %s at once; its log ends:\n%s", zone.Kind, zone.ID, z.exit, tail(filepath.Join(dir, logFile)))
	case <-time.After(r.cfg.StartGrace):
	case <-ctx.Done():
	}
	r.log.Info("zone process started", zap.Stringer("zone_id", zone.ID), zap.String("kind", string(zone.Kind)),
		zap.Int("pid", z.rec.Pid), zap.String("dir", dir))
	return nil
}

// reap waits for a child and records how it ended.
func (r *Runtime) reap(z *zoneProc, cmd *exec.Cmd) {
	err := cmd.Wait()
	r.mu.Lock()
	z.exit = "exited"
	if err != nil {
		z.exit = err.Error() // "exit status 1", "signal: killed"
	}
	close(z.exited)
	halting, onExit := z.halting, r.onExit
	r.mu.Unlock()
	if !halting {
		r.log.Warn("zone process exited on its own", zap.Stringer("zone_id", z.rec.Zone.ID), zap.Int("pid", z.rec.Pid),
			zap.String("exit", z.exit))
		onExit()
	}
}

// watchAdopted checks, every PollPeriod, that adopted processes still run.
func (r *Runtime) watchAdopted() {
	defer r.done.Done()
	ticker := time.NewTicker(r.cfg.PollPeriod)
	defer ticker.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-ticker.C:
		}
		var exits bool
		r.mu.Lock()
		for _, z := range r.zones {
			if z.rec.Running && !z.child && !z.gone() && !alive(z.rec.Pid, z.rec.StartTicks) {
				z.exit = fmt.Sprintf("process %d is gone", z.rec.Pid)
				close(z.exited)
				exits = exits || !z.halting
			}
		}
		onExit := r.onExit
		r.mu.Unlock()
		if exits {
			onExit()
		}
	}
}

// Shutdown implements reconciler.ZoneRuntime.
func (r *Runtime) Shutdown(ctx context.Context, id uuid.UUID, step reconciler.ShutdownStep) error {
	r.mu.Lock()
	z, ok := r.zones[id]
	r.mu.Unlock()
	if !ok {
		return nil // gone already (Z7)
	}
	switch step {
	case reconciler.StepUntrackMetrics:
		return r.update(z, func(rec *record) { rec.MetricsTracked = false })
	case reconciler.StepHaltAndRemove:
		if err := r.halt(ctx, z); err != nil {
			return err
		}
		return r.update(z, func(rec *record) { rec.MetricsTracked, rec.Running = false, false })
	case reconciler.StepCleanUp:
		if !z.gone() {
			return fmt.Errorf("zone %s's process %d still runs; it must be halted before clean-up", id, z.rec.Pid)
		}
		if err := os.Remove(filepath.Join(z.dir, recordFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		r.mu.Lock()
		delete(r.zones, id)
		r.mu.Unlock()
		return nil
	}
	return fmt.Errorf("unknown shutdown step %d", step)
}

// halt ends the zone's process: SIGTERM to its process group, SIGKILL
// after the bound, and it returns only once the process is gone.
func (r *Runtime) halt(ctx context.Context, z *zoneProc) error {
	r.mu.Lock()
	z.halting = true
	r.mu.Unlock()
	if z.gone() || !alive(z.rec.Pid, z.rec.StartTicks) {
		return nil
	}
	log := r.log.With(zap.Stringer("zone_id", z.rec.Zone.ID), zap.Int("pid", z.rec.Pid))
	syscall.Kill(-z.rec.Pid, syscall.SIGTERM) //nolint:errcheck // gone already is what we want
	if r.waitGone(ctx, z, r.cfg.StopBound) {
		log.Info("zone process stopped")
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("halting zone %s: %w", z.rec.Zone.ID, ctx.Err())
	}
	log.Warn("zone process ignored SIGTERM; killing it", zap.Duration("bound", r.cfg.StopBound))
	syscall.Kill(-z.rec.Pid, syscall.SIGKILL) //nolint:errcheck // as above
	if r.waitGone(ctx, z, r.cfg.StopBound) {
		return nil
	}
	return fmt.Errorf("zone %s's process %d is still there after SIGKILL", z.rec.Zone.ID, z.rec.Pid)
}

// waitGone waits up to bound for the zone's process to be gone.
func (r *Runtime) waitGone(ctx context.Context, z *zoneProc, bound time.Duration) bool {
	deadline := time.Now().Add(bound)
	for {
		if z.gone() || !alive(z.rec.Pid, z.rec.StartTicks) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-z.exited:
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// update changes the zone's record on disk, then in memory.
func (r *Runtime) update(z *zoneProc, change func(*record)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := z.rec
	change(&next)
	if err := writeRecord(z.dir, next); err != nil {
		return err
	}
	z.rec = next
	return nil
}

// writeRecord replaces the record whole: a temporary file, renamed. Like
// the processes it describes, it survives a sled-agent kill -9 through the
// page cache; a power cut ends the processes too.
func writeRecord(dir string, rec record) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, recordFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, recordFile))
}

// zoneEnv is what a zone's process is told about itself: its identity and
// addresses for any kind, and for a nexus zone the settings nexus reads
// from its environment (services/nexus/config).
func zoneEnv(z zoneconfig.Zone, dir string) []string {
	env := []string{
		"RACKPLANE_ZONE_ID=" + z.ID.String(),
		"RACKPLANE_ZONE_KIND=" + string(z.Kind),
		"RACKPLANE_ZONE_ADDRESS=" + z.Address.String(),
		"RACKPLANE_ZONE_DIR=" + dir,
	}
	if z.Kind == zoneconfig.KindNexus {
		env = append(env,
			"NEXUS_ID="+z.ID.String(),
			"NEXUS_INTERNAL_LISTEN="+z.Address.String(),
			"NEXUS_EXTERNAL_LISTEN="+z.Nexus.ExternalAddress.String(),
			"NEXUS_METRICS_LISTEN="+z.Nexus.MetricsAddress.String(),
			"NEXUS_DATABASE_BACKEND="+z.Nexus.DatabaseBackend,
			"NEXUS_DATABASE_URL="+z.Nexus.DatabaseURL,
		)
	}
	return env
}

// tail is the end of a log, for an error that says why a zone died.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	return string(bytes.Join(lines[max(0, len(lines)-10):], []byte("\n")))
}

// Process is a zone process found running under a root.
type Process struct {
	Zone zoneconfig.Zone
	Pid  int
	// Log is the file the process writes its output to.
	Log string
}

// Running lists the zone processes recorded under root that still run, for
// a launcher to report them (the runtime itself reads its records in Open).
func Running(root string) ([]Process, error) {
	live, err := liveRecords(root)
	var out []Process
	for _, l := range live {
		out = append(out, Process{Zone: l.rec.Zone, Pid: l.rec.Pid, Log: filepath.Join(l.dir, logFile)})
	}
	return out, err
}

// StopAll stops every zone process recorded under root that still runs:
// SIGTERM to each zone's process group, SIGKILL to those still there after
// bound. It is for tearing a whole sled down (a local cluster that stops, a
// test that ends), never for the reconciler, which stops zones one by one.
// It returns the pids it stopped, so that a caller that inherited them as
// an orphans' reaper can reap them.
func StopAll(root string, bound time.Duration) ([]int, error) {
	live, err := liveRecords(root)
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(live))
	for _, l := range live {
		syscall.Kill(-l.rec.Pid, syscall.SIGTERM) //nolint:errcheck // gone already is fine
		pids = append(pids, l.rec.Pid)
	}
	deadline := time.Now().Add(bound)
	for _, l := range live {
		for alive(l.rec.Pid, l.rec.StartTicks) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(l.rec.Pid, l.rec.StartTicks) {
			syscall.Kill(-l.rec.Pid, syscall.SIGKILL) //nolint:errcheck // as above
		}
	}
	return pids, nil
}

// located is a zone record and the zone directory it was read from.
type located struct {
	rec record
	dir string
}

// liveRecords reads the records under root whose process still runs;
// unreadable records are skipped, as Open skips them.
func liveRecords(root string) ([]located, error) {
	paths, err := filepath.Glob(filepath.Join(root, "*", "zones", "*", recordFile))
	if err != nil {
		return nil, err
	}
	var live []located
	for _, path := range paths {
		var rec record
		data, err := os.ReadFile(path)
		if err != nil || json.Unmarshal(data, &rec) != nil || !alive(rec.Pid, rec.StartTicks) {
			continue
		}
		live = append(live, located{rec: rec, dir: filepath.Dir(path)})
	}
	return live, nil
}
