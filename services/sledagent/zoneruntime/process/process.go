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
// A zone is all its processes: the one the runtime started, whatever
// carries its id and directory in its environment (RACKPLANE_ZONE_ID,
// RACKPLANE_ZONE_DIR), its process group, and their descendants. Starting returns once the process has run for a short grace
// period without exiting; stopping (the halt step) sends SIGTERM to every
// process of the zone, then SIGKILL after a bound, and succeeds only once
// none is left. A zone that is gone already is shut down (Z7). A zone whose
// process exits on its own is reported (PresentZone.Exited) and the runtime
// pokes the reconciler, which clears what is left of it and starts it again
// after a backoff; a zone is never started while processes of an earlier
// run of it remain.
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

	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/services/sledagent/reconciler"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

// Config says where zones live and what runs for each kind.
type Config struct {
	// Root holds every pool's zones: <Root>/<pool>/zones/<zone id>.
	Root string
	// SledTLSDir is the sled's rack identity directory: a nexus zone is
	// handed its own, rackpki.ZoneDir(SledTLSDir, zone id), as its
	// tls_dir (S1).
	SledTLSDir string
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
	// The environment that marks a zone's processes (zoneMembers).
	envZoneID  = "RACKPLANE_ZONE_ID"
	envZoneDir = "RACKPLANE_ZONE_DIR"
)

// record is a zone as its zone.json keeps it.
type record struct {
	Zone zoneconfig.Zone `json:"zone"`
	// Pid is the zone's process; 0 while it is being started (the record
	// is written first, so that a sled-agent killed before it learns the
	// pid still leaves a record to find the process by).
	Pid int `json:"pid"`
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
	// starting: StartZone is waiting out the start grace, and reports an
	// exit itself, as a failed start.
	starting bool
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
	var records []string
	if cfg.Root != "" { // no root, no process zones (and no glob relative to the working directory)
		var err error
		if records, err = filepath.Glob(filepath.Join(cfg.Root, "*", "zones", "*", recordFile)); err != nil {
			return nil, err
		}
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
		case rec.Pid == 0:
			// Whatever it started is cleared by the halt that comes before
			// the zone starts again.
			z.exit = "its start was interrupted (the sled-agent stopped before it recorded the process)"
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
// runs is left running, and one with processes left from an earlier run is
// not started: never a second copy.
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
	if left := zoneMembers(r.cfg.Root, zone.ID.String(), 0, 0); len(left) > 0 {
		return fmt.Errorf("processes %v of an earlier run of zone %s still run; it must be halted first", left, zone.ID)
	}
	tlsDir := rackpki.ZoneDir(r.cfg.SledTLSDir, zone.ID.String())
	if zone.Kind == zoneconfig.KindNexus {
		if _, err := os.Stat(filepath.Join(tlsDir, rackpki.CertFile)); err != nil {
			return fmt.Errorf("nexus zone %s has no rack identity in %s (issue it with `nexus rack-certs`): %w", zone.ID, tlsDir, err)
		}
	}
	dir := filepath.Join(r.cfg.Root, zone.FilesystemPool, "zones", zone.ID.String())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own descriptor
	rec := record{Zone: zone, MetricsTracked: true, Running: true}
	if err := writeRecord(dir, rec); err != nil {
		return err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, out, out
	cmd.Env = append(os.Environ(), zoneEnv(zone, dir, tlsDir)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s zone %s: %w", zone.Kind, zone.ID, err)
	}
	abandon := func(err error) error {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // its whole group is abandoned
		cmd.Wait()                                      //nolint:errcheck // reaped
		return err
	}
	rec.Pid = cmd.Process.Pid
	if rec.StartTicks, err = StartTicks(rec.Pid); err != nil {
		return abandon(fmt.Errorf("reading the start time of zone %s's process: %w", zone.ID, err))
	}
	if err := writeRecord(dir, rec); err != nil {
		return abandon(err)
	}
	z := &zoneProc{dir: dir, exited: make(chan struct{}), child: true, starting: true, rec: rec}
	r.mu.Lock()
	r.zones[zone.ID] = z
	r.mu.Unlock()
	go r.reap(z, cmd)
	select {
	case <-z.exited:
	case <-time.After(r.cfg.StartGrace):
	case <-ctx.Done():
	}
	// From here on an exit is the zone's own, which the reaper reports;
	// one that came first is this start's failure.
	r.mu.Lock()
	z.starting = false
	exited, exit := z.gone(), z.exit
	r.mu.Unlock()
	if exited {
		return fmt.Errorf("%s zone %s %s at once; its log ends:\n%s", zone.Kind, zone.ID, exit, tail(filepath.Join(dir, logFile)))
	}
	r.log.Info("zone process started", zap.Stringer("zone_id", zone.ID), zap.String("kind", string(zone.Kind)),
		zap.Int("pid", rec.Pid), zap.String("dir", dir))
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
	ownExit, onExit := !z.halting && !z.starting, r.onExit
	id, pid, exit := z.rec.Zone.ID, z.rec.Pid, z.exit
	r.mu.Unlock()
	if ownExit {
		r.log.Warn("zone process exited on its own", zap.Stringer("zone_id", id), zap.Int("pid", pid), zap.String("exit", exit))
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
		if step == reconciler.StepHaltAndRemove {
			// Gone already (Z7), unless processes of it are left that
			// the runtime lost track of (its record was unreadable):
			// halting is halting those.
			return r.halt(ctx, &zoneProc{rec: record{Zone: zoneconfig.Zone{ID: id}}})
		}
		return nil
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
		if left := r.members(z); len(left) > 0 {
			return fmt.Errorf("processes %v of zone %s still run; it must be halted before clean-up", left, id)
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

// halt ends every process of the zone: SIGTERM, then SIGKILL to those
// left after the bound; it returns only once none is left.
func (r *Runtime) halt(ctx context.Context, z *zoneProc) error {
	r.mu.Lock()
	z.halting = true
	r.mu.Unlock()
	left := r.members(z)
	if len(left) == 0 {
		return nil
	}
	log := r.log.With(zap.Stringer("zone_id", z.rec.Zone.ID), zap.Ints("pids", left))
	signal(left, syscall.SIGTERM)
	if left = r.waitNoMembers(ctx, z, r.cfg.StopBound); len(left) == 0 {
		log.Info("zone processes stopped")
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("halting zone %s: %w", z.rec.Zone.ID, ctx.Err())
	}
	log.Warn("zone processes ignored SIGTERM; killing them", zap.Ints("left", left), zap.Duration("bound", r.cfg.StopBound))
	signal(left, syscall.SIGKILL)
	if left = r.waitNoMembers(ctx, z, r.cfg.StopBound); len(left) == 0 {
		return nil
	}
	return fmt.Errorf("processes %v of zone %s are still there after SIGKILL", left, z.rec.Zone.ID)
}

// members returns the zone's live processes: the one it recorded, if it
// still runs, and every process carrying its marker that started no
// earlier (any, for a zone whose start was interrupted).
func (r *Runtime) members(z *zoneProc) []int {
	r.mu.Lock()
	rec := z.rec
	r.mu.Unlock()
	return liveMembers(r.cfg.Root, rec)
}

// liveMembers is members for a zone's record, under root.
func liveMembers(root string, rec record) []int {
	leader := 0
	if alive(rec.Pid, rec.StartTicks) {
		leader = rec.Pid
	}
	pids := zoneMembers(root, rec.Zone.ID.String(), leader, rec.StartTicks)
	if leader != 0 && !slices.Contains(pids, leader) {
		pids = append(pids, leader)
	}
	return pids
}

// waitNoMembers waits up to bound for the zone to have no process left,
// and returns those still there.
func (r *Runtime) waitNoMembers(ctx context.Context, z *zoneProc, bound time.Duration) []int {
	deadline := time.Now().Add(bound)
	for {
		left := r.members(z)
		if len(left) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return left
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

func signal(pids []int, sig syscall.Signal) {
	for _, pid := range pids {
		syscall.Kill(pid, sig) //nolint:errcheck // gone already is what we want
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
func zoneEnv(z zoneconfig.Zone, dir, tlsDir string) []string {
	env := []string{
		envZoneID + "=" + z.ID.String(),
		"RACKPLANE_ZONE_KIND=" + string(z.Kind),
		"RACKPLANE_ZONE_ADDRESS=" + z.Address.String(),
		envZoneDir + "=" + dir,
	}
	if z.Kind == zoneconfig.KindNexus {
		env = append(env,
			"RACKPLANE_NEXUS_ID="+z.ID.String(),
			"RACKPLANE_NEXUS_INTERNAL_LISTEN="+z.Address.String(),
			"RACKPLANE_NEXUS_EXTERNAL_LISTEN="+z.Nexus.ExternalAddress.String(),
			"RACKPLANE_NEXUS_METRICS_LISTEN="+z.Nexus.MetricsAddress.String(),
			"RACKPLANE_NEXUS_DATABASE_BACKEND="+z.Nexus.DatabaseBackend,
			"RACKPLANE_NEXUS_DATABASE_URL="+z.Nexus.DatabaseURL,
			"RACKPLANE_NEXUS_TLS_DIR="+tlsDir,
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

// StopAll stops every process of every zone recorded under root: SIGTERM,
// then SIGKILL to those still there after bound. It is for tearing a whole
// sled down (a local cluster that stops, a test that ends), never for the
// reconciler, which stops zones one by one. It returns the pids it
// stopped, so that a caller that inherited them as an orphans' reaper can
// reap them.
func StopAll(root string, bound time.Duration) ([]int, error) {
	paths, err := filepath.Glob(filepath.Join(root, "*", "zones", "*", recordFile))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, path := range paths {
		var rec record
		data, err := os.ReadFile(path)
		if err != nil || json.Unmarshal(data, &rec) != nil {
			continue
		}
		if !alive(rec.Pid, rec.StartTicks) {
			// A dead process's start time bounds nothing: any process
			// with the zone's marker is a leftover of it.
			rec.Pid, rec.StartTicks = 0, 0
		}
		pids = append(pids, liveMembers(root, rec)...)
	}
	signal(pids, syscall.SIGTERM)
	deadline := time.Now().Add(bound)
	for _, pid := range pids {
		ticks, err := StartTicks(pid)
		for err == nil && alive(pid, ticks) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if err == nil && alive(pid, ticks) {
			syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck // as above
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
