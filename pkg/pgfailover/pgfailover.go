// Package pgfailover gives tests a PostgreSQL formation that fails over
// (SPEC R2): a pg_auto_failover monitor, a primary and one synchronous
// standby, all on loopback, in a temporary directory, run by the pg_autoctl
// of Debian's pg-auto-failover-cli and postgresql-15-auto-failover
// packages. The failover itself is pg_auto_failover's, never the test's:
// the test kills the primary and waits for the monitor to promote the
// standby, and may then start the killed node again for it to rejoin as
// the new standby.
//
// pg_autoctl refuses to run as root, as PostgreSQL does: as root the
// formation runs as the postgres user, as pkg/pgtest's servers do.
package pgfailover

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/rackplane/rackplane/pkg/testutil"
)

// Database is the application database the formation serves, created by
// pg_autoctl on the primary and replicated to the standby.
const Database = "rackplane"

// Bounds of the formation's own steps on a shared 2-core machine.
const (
	// setUpBound covers initdb of three servers and the standby's base
	// backup.
	setUpBound = 2 * time.Minute
	// promotionBound covers the monitor noticing the dead primary and
	// promoting the standby, with the tighter timeouts Start sets.
	promotionBound = time.Minute
	// rejoinBound covers an old primary's pg_rewind and catching up with
	// the new one.
	rejoinBound = 2 * time.Minute
)

// Formation is a running pg_auto_failover formation.
type Formation struct {
	t          testutil.TB
	dir        string
	env        []string
	cred       *syscall.Credential
	autoctl    string
	pgctl      string
	monitorURL string
	// monitorDB is a pool on the monitor, which the waits poll.
	monitorDB *sql.DB
	monitor   *process
	nodes     []*node
}

// node is one PostgreSQL node of the formation and the pg_autoctl that
// keeps it.
type node struct {
	name string
	port int
	*process
}

// process is a pg_autoctl service, in a process group of its own with the
// postgres it starts, so that one signal reaches both.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// Require skips t when this machine has no pg_auto_failover, and fails it
// instead with CI=true: a failover test must never turn green by skipping
// in CI.
func Require(t testing.TB) {
	t.Helper()
	if _, _, err := binaries(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pg_auto_failover is required in CI: %v", err)
		}
		t.Skipf("no pg_auto_failover (apt-get install postgresql-15-auto-failover pg-auto-failover-cli): %v", err)
	}
}

// Start starts a monitor, a primary and one synchronous standby, and
// returns once the monitor reports them primary and secondary and the
// primary waits for the standby on every commit. It stops them and removes
// their files when t ends. A test without pg_auto_failover is skipped (see
// Require); a command's t fails.
func Start(t testutil.TB) *Formation {
	t.Helper()
	if tt, ok := t.(testing.TB); ok {
		Require(tt)
	}
	autoctl, pgctl, err := binaries()
	if err != nil {
		t.Fatalf("no pg_auto_failover (apt-get install postgresql-15-auto-failover pg-auto-failover-cli): %v", err)
	}
	f := &Formation{t: t, autoctl: autoctl, pgctl: pgctl}
	f.makeDir()
	t.Cleanup(f.stop)
	f.startMonitor()
	f.startNode("node1")
	testutil.WaitFor(t, setUpBound, func() error { return f.inState(map[string]string{"node1": "single"}) })
	f.startNode("node2")
	// The standby's base backup waits for a checkpoint, spread by default
	// over most of checkpoint_timeout (minutes); asking for an immediate
	// one, once a second until the standby is there, makes the spread one
	// finish at once.
	var nudged time.Time
	testutil.WaitFor(t, setUpBound, func() error {
		err := f.inState(map[string]string{"node1": "primary", "node2": "secondary"})
		if err != nil && time.Since(nudged) > time.Second {
			nudged = time.Now()
			f.execSQL(f.nodeURL(f.nodes[0]), "CHECKPOINT") //nolint:errcheck // only a nudge
		}
		return err
	})
	testutil.WaitFor(t, setUpBound, f.synchronous)
	return f
}

// Rejoin starts the pg_autoctl of node name, killed by KillPrimary, again,
// and returns once the monitor reports it the secondary of the other node,
// the primary, and the primary waits for it on every commit again: the
// formation can then fail over once more. pg_auto_failover itself turns
// the old primary into a standby (pg_rewind, then streaming from the new
// primary); Rejoin only starts it.
func (f *Formation) Rejoin(name string) {
	f.t.Helper()
	n := f.node(name)
	select {
	case <-n.done:
	default:
		f.t.Fatalf("pgfailover: node %s still runs", name)
	}
	n.process = f.spawn(name, "run", "--pgdata", filepath.Join(f.dir, name))
	want := map[string]string{name: "secondary"}
	for _, other := range f.nodes {
		if other.name != name {
			want[other.name] = "primary"
		}
	}
	testutil.WaitFor(f.t, rejoinBound, func() error { return f.inState(want) })
	testutil.WaitFor(f.t, rejoinBound, f.synchronous)
}

// DSN is the application's connection string: both nodes, in order, and
// only a session that accepts writes will do, so that a new connection
// finds whichever is primary now.
func (f *Formation) DSN() string {
	hosts := make([]string, len(f.nodes))
	for i, n := range f.nodes {
		hosts[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port))
	}
	return "postgres://postgres@" + strings.Join(hosts, ",") + "/" + Database +
		"?sslmode=disable&target_session_attrs=read-write&connect_timeout=5"
}

// Primary is the name of the node the monitor has as primary now.
func (f *Formation) Primary() (string, error) {
	states, err := f.states()
	if err != nil {
		return "", err
	}
	for name, s := range states {
		if s.reported == s.goal && writable(s.reported) {
			return name, nil
		}
	}
	return "", fmt.Errorf("no primary: %v", states)
}

// KillPrimary kills the primary's postgres and its pg_autoctl with
// SIGKILL, as a crashed machine would stop, and returns its name. Killing
// postgres alone would not do: its pg_autoctl restarts it in place.
func (f *Formation) KillPrimary() string {
	f.t.Helper()
	name, err := f.Primary()
	if err != nil {
		f.t.Fatal(err)
	}
	n := f.node(name)
	syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // gone already is fine
	<-n.done
	return name
}

// WaitPromoted waits until the monitor has promoted a node other than old
// and that node accepts writes, and returns its name.
func (f *Formation) WaitPromoted(old string) string {
	f.t.Helper()
	var promoted string
	testutil.WaitFor(f.t, promotionBound, func() error {
		name, err := f.Primary()
		if err != nil {
			return err
		}
		if name == old {
			return fmt.Errorf("%s is still the primary", old)
		}
		var recovering bool
		if err := f.querySQL(f.nodeURL(f.node(name)), "SELECT pg_is_in_recovery()", &recovering); err != nil {
			return err
		}
		if recovering {
			return fmt.Errorf("%s is promoted but still in recovery", name)
		}
		promoted = name
		return nil
	})
	return promoted
}

// nodeState is a node's state as the monitor has it.
type nodeState struct{ reported, goal string }

func (s nodeState) String() string { return s.reported + "→" + s.goal }

// writable says whether a node in state s is the one accepting writes:
// alone, waiting for a standby, or with one.
func writable(s string) bool { return s == "single" || s == "wait_primary" || s == "primary" }

// states asks the monitor for every node's state.
func (f *Formation) states() (map[string]nodeState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := f.monitorDB.QueryContext(ctx, `SELECT nodename, reportedstate::text, goalstate::text FROM pgautofailover.node`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	states := map[string]nodeState{}
	for rows.Next() {
		var name string
		var s nodeState
		if err := rows.Scan(&name, &s.reported, &s.goal); err != nil {
			return nil, err
		}
		states[name] = s
	}
	return states, rows.Err()
}

// inState says whether every named node has reached the state given.
func (f *Formation) inState(want map[string]string) error {
	states, err := f.states()
	if err != nil {
		return err
	}
	for name, w := range want {
		if s := states[name]; s.reported != w || s.goal != w {
			return fmt.Errorf("waiting for %v, the monitor has %v", want, states)
		}
	}
	return nil
}

// synchronous checks that the primary waits for the standby on every
// commit, so that an acknowledged commit is on both. pg_auto_failover
// names a standby with replication quorum in synchronous_standby_names
// once the formation is primary and secondary.
func (f *Formation) synchronous() error {
	var names, commit string
	primary, err := f.Primary()
	if err != nil {
		return err
	}
	url := f.nodeURL(f.node(primary))
	if err := f.querySQL(url, "SHOW synchronous_standby_names", &names); err != nil {
		return err
	}
	if err := f.querySQL(url, "SHOW synchronous_commit", &commit); err != nil {
		return err
	}
	if names == "" || commit != "on" {
		return fmt.Errorf("the primary does not wait for its standby: synchronous_standby_names %q, synchronous_commit %q", names, commit)
	}
	return nil
}

func (f *Formation) node(name string) *node {
	for _, n := range f.nodes {
		if n.name == name {
			return n
		}
	}
	f.t.Fatalf("pgfailover: no node %q", name)
	return nil
}

// nodeURL reaches one node as the superuser, whatever its role.
func (f *Formation) nodeURL(n *node) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable&connect_timeout=5", n.port, Database)
}

func (f *Formation) querySQL(url, query string, dest any) error {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return db.QueryRowContext(ctx, query).Scan(dest)
}

func (f *Formation) execSQL(url string, statements ...string) error {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range statements {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// makeDir makes the formation's directory, owned by whoever runs it, and
// the environment pg_autoctl runs in: its configuration and state files
// under that directory rather than in a home directory.
func (f *Formation) makeDir() {
	dir, err := os.MkdirTemp("", "rackplane-pgfailover-")
	if err != nil {
		f.t.Fatal(err)
	}
	f.dir = dir
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			f.t.Fatalf("pg_autoctl refuses root, and there is no postgres user to run it as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		f.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			f.t.Fatal(err)
		}
	}
	// Only the PostgreSQL of pg_ctl on PATH: pg_autoctl refuses to choose
	// among several. PG_REGRESS_SOCK_DIR is pg_autoctl's own setting for
	// where its servers put their Unix sockets, and so where it reaches
	// them: here rather than the system's directory, which only the
	// postgres group may write.
	f.env = []string{
		"PG_REGRESS_SOCK_DIR=" + dir,
		"HOME=" + dir,
		"XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"XDG_DATA_HOME=" + filepath.Join(dir, "share"),
		"XDG_RUNTIME_DIR=" + dir,
		"PATH=" + filepath.Dir(f.pgctl) + ":" + filepath.Dir(f.autoctl) + ":/usr/bin:/bin",
	}
}

// The monitor's timings, tighter than pg_auto_failover's defaults (5 s
// health checks, unhealthy after 20 s, 30 s for a lost primary to demote
// itself) so that a test's failover takes seconds, not a minute. They keep
// the defaults' order: the monitor waits longer before promoting than a
// primary cut off from it and its standby waits before demoting itself
// (partitionTimeout), so that two primaries never take writes.
var monitorSettings = []string{
	"pgautofailover.health_check_period = 1000",
	"pgautofailover.health_check_timeout = 1000",
	"pgautofailover.health_check_retry_delay = 500",
	"pgautofailover.health_check_max_retries = 2",
	"pgautofailover.node_considered_unhealthy_timeout = 3000",
	"pgautofailover.primary_demote_timeout = 8000",
}

// partitionTimeout is how long, in seconds, a primary that reaches
// neither the monitor nor its standby goes on before demoting itself.
const partitionTimeout = "4"

// startMonitor creates the monitor, listening on loopback only, and runs
// it with the tighter timings.
func (f *Formation) startMonitor() {
	port := freePort(f.t)
	pgdata := filepath.Join(f.dir, "monitor")
	f.run("create monitor", "create", "monitor", "--pgctl", f.pgctl, "--pgdata", pgdata,
		"--pgport", strconv.Itoa(port), "--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl")
	f.run("monitor listen address", "config", "set", "--pgdata", pgdata, "postgresql.listen_addresses", "127.0.0.1")
	f.monitor = f.spawn("monitor", "run", "--pgdata", pgdata)
	f.monitorURL = fmt.Sprintf("postgres://autoctl_node@127.0.0.1:%d/pg_auto_failover?sslmode=disable&connect_timeout=5", port)
	db, err := sql.Open("pgx", f.monitorURL)
	if err != nil {
		f.t.Fatal(err)
	}
	f.monitorDB = db
	superuser := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/pg_auto_failover?sslmode=disable&connect_timeout=5", port)
	statements := make([]string, 0, len(monitorSettings)+1)
	for _, s := range monitorSettings {
		name, value, _ := strings.Cut(s, " = ")
		statements = append(statements, fmt.Sprintf("ALTER SYSTEM SET %s = %s", name, value))
	}
	statements = append(statements, "SELECT pg_reload_conf()")
	testutil.WaitFor(f.t, setUpBound, func() error { return f.execSQL(superuser, statements...) })
}

// startNode creates node name and runs it: the first becomes the primary,
// the next a standby cloned from it.
func (f *Formation) startNode(name string) {
	port := freePort(f.t)
	pgdata := filepath.Join(f.dir, name)
	args := []string{"create", "postgres", "--pgctl", f.pgctl, "--pgdata", pgdata, "--pgport", strconv.Itoa(port),
		"--pghost", "127.0.0.1", "--listen", "127.0.0.1", "--hostname", "127.0.0.1", "--name", name,
		"--dbname", Database, "--auth", "trust", "--no-ssl", "--monitor", f.monitorURL}
	f.run("create "+name, args...)
	f.run(name+" partition timeout", "config", "set", "--pgdata", pgdata, "timeout.network_partition_timeout", partitionTimeout)
	f.nodes = append(f.nodes, &node{name: name, port: port, process: f.spawn(name, "run", "--pgdata", pgdata)})
}

// run runs one pg_autoctl command to its end.
func (f *Formation) run(what string, args ...string) {
	f.t.Helper()
	cmd := f.command(args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		f.t.Fatalf("pg_autoctl %s: %v\n%s", what, err, out)
	}
}

// spawn starts a pg_autoctl service, logging to a file of the formation's
// directory, in a process group of its own.
func (f *Formation) spawn(name string, args ...string) *process {
	f.t.Helper()
	cmd := f.command(args...)
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	// Appended to: a node started again by Rejoin keeps its first log.
	log, err := os.OpenFile(filepath.Join(f.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		f.t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		f.t.Fatalf("pg_autoctl %s: %v", name, err)
	}
	f.reapWithTest(cmd.Process.Pid)
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait() //nolint:errcheck // a killed or stopped service
		close(p.done)
	}()
	return p
}

// reapWithTest kills process group pgid if the test binary dies without
// cleaning up (killed, or its output cut): the pg_autoctl at its head dies
// with the test (Pdeathsig), but the services it started and their
// postgres would go on. A watcher shell, told by the same parent-death
// signal, kills the whole group and removes the formation's files;
// t.Cleanup ends the watcher otherwise.
func (f *Formation) reapWithTest(pgid int) {
	f.t.Helper()
	watcher := exec.Command("/bin/sh", "-c", fmt.Sprintf(`trap 'kill -KILL -%d; rm -rf %q; exit 0' TERM; while sleep 1; do :; done`, pgid, f.dir))
	watcher.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := watcher.Start(); err != nil {
		f.t.Fatalf("watching pg_autoctl's processes: %v", err)
	}
	f.t.Cleanup(func() {
		watcher.Process.Kill() //nolint:errcheck // gone already is fine
		watcher.Wait()         //nolint:errcheck // killed
	})
}

func (f *Formation) command(args ...string) *exec.Cmd {
	cmd := exec.Command(f.autoctl, args...)
	cmd.Dir = f.dir
	cmd.Env = f.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: f.cred}
	return cmd
}

// stop stops every service still running, nodes first, each with the
// signal pg_autoctl stops on (it stops its postgres), then with SIGKILL
// to its group if it has not stopped in time; then removes the files,
// keeping the logs in the test's output when it failed.
func (f *Formation) stop() {
	if f.monitorDB != nil {
		f.monitorDB.Close()
	}
	for _, p := range f.services() {
		p.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // gone already is fine
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // gone already is fine
			<-p.done
		}
	}
	if t, ok := f.t.(interface{ Failed() bool }); ok && t.Failed() {
		f.logLogs()
	}
	os.RemoveAll(f.dir)
}

func (f *Formation) services() []*process {
	var ps []*process
	for _, n := range f.nodes {
		ps = append(ps, n.process)
	}
	if f.monitor != nil {
		ps = append(ps, f.monitor)
	}
	return ps
}

// logLogs puts the tail of every service's log in the test's output.
func (f *Formation) logLogs() {
	logs, _ := filepath.Glob(filepath.Join(f.dir, "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		const tail = 4000
		if len(b) > tail {
			b = b[len(b)-tail:]
		}
		f.t.Logf("pg_autoctl %s:\n%s", filepath.Base(l), b)
	}
}

// binaries finds pg_autoctl and the pg_ctl of the newest PostgreSQL that
// has the pg_auto_failover extension installed.
func binaries() (autoctl, pgctl string, err error) {
	autoctl, err = exec.LookPath("pg_autoctl")
	if err != nil {
		return "", "", err
	}
	controls, _ := filepath.Glob("/usr/share/postgresql/*/extension/pgautofailover.control")
	sort.Sort(sort.Reverse(sort.StringSlice(controls)))
	for _, c := range controls {
		version := filepath.Base(filepath.Dir(filepath.Dir(c)))
		pgctl := filepath.Join("/usr/lib/postgresql", version, "bin", "pg_ctl")
		if _, err := os.Stat(pgctl); err == nil {
			return autoctl, pgctl, nil
		}
	}
	return "", "", errors.New("no PostgreSQL with the pgautofailover extension under /usr/share/postgresql/*/extension")
}

func freePort(t testutil.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
