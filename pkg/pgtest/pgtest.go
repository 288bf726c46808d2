package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// EnvDSN names the variable holding the DSN of an existing server.
const EnvDSN = "RACKPLANE_TEST_POSTGRES_DSN"

type server struct {
	adminDSN string // the maintenance database, for CREATE DATABASE
	dsnFor   func(db string) string
	stop     func() // nil for a server someone else runs
	err      error
}

var (
	once      sync.Once
	shared    *server
	databases atomic.Int64
)

// DSN returns the DSN of a new, empty database, or fails (CI=true) or skips
// the test when no PostgreSQL can be had.
func DSN(t testing.TB) string {
	t.Helper()
	once.Do(func() { shared = start() })
	if shared.err != nil {
		if mustFail(os.Getenv) {
			t.Fatalf("PostgreSQL is required in CI and could not be had: %v", shared.err)
		}
		t.Skipf("no PostgreSQL for this test (set %s, install PostgreSQL server binaries, or run a Docker engine): %v", EnvDSN, shared.err)
	}
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), databases.Add(1))
	db, err := sql.Open("pgx", shared.adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", shared.adminDSN)
		if err != nil {
			return
		}
		defer db.Close()
		db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)") //nolint:errcheck // best effort
	})
	return shared.dsnFor(name)
}

// Main runs the tests, then stops the server DSN started, if any.
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil && shared.stop != nil {
		shared.stop()
	}
	return code
}

func start() *server {
	src, bin, err := choose(machine())
	if err != nil {
		return &server{err: err}
	}
	var s *server
	switch src {
	case fromDSN:
		dsn := os.Getenv(EnvDSN)
		return &server{adminDSN: dsn, dsnFor: func(db string) string { return withDatabase(dsn, db) }}
	case fromBinaries:
		s, err = startLocal(bin, ServerOptions{})
	case fromContainer:
		s, err = startContainer(context.Background())
	}
	if err != nil {
		return &server{err: fmt.Errorf("%s: %w", src, err)}
	}
	return s
}

// source is where the tests' PostgreSQL server comes from.
type source string

const (
	fromDSN       source = EnvDSN
	fromBinaries  source = "local PostgreSQL server binaries"
	fromContainer source = "a container (testcontainers-go)"
)

// probes are what the machine offers, each asked only when the sources
// before it are not there.
type probes struct {
	dsn      string
	binaries func() (string, error)
	docker   func() error
}

// machine probes this machine.
func machine() probes {
	return probes{dsn: os.Getenv(EnvDSN), binaries: findBinaries, docker: dockerEngine}
}

// choose takes the first source the machine offers, in the order: a DSN
// someone gives (a server they run), local server binaries (a server of
// this process, fastest to start), a Docker engine (a container); or says
// why there is none.
func choose(p probes) (src source, bin string, err error) {
	if p.dsn != "" {
		return fromDSN, "", nil
	}
	bin, binErr := p.binaries()
	if binErr == nil {
		return fromBinaries, bin, nil
	}
	dockerErr := p.docker()
	if dockerErr == nil {
		return fromContainer, "", nil
	}
	return "", "", fmt.Errorf("no %s, no PostgreSQL server binaries (%v), and no Docker engine for testcontainers (%v)",
		EnvDSN, binErr, dockerErr)
}

// mustFail says whether a test that cannot get PostgreSQL fails rather
// than skips: in CI, where green must never come from skipping.
func mustFail(getenv func(string) string) bool { return getenv("CI") == "true" }

// dockerEngine reports whether a Docker engine answers, as testcontainers
// finds one (DOCKER_HOST, its config, the usual sockets).
func dockerEngine() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return err
	}
	return cli.Close()
}

// containerImage is the PostgreSQL the container runs: the version
// docker-compose.yml runs.
const containerImage = "postgres:15-alpine"

// startContainer runs PostgreSQL in a container for the tests, with the
// same durability shortcuts startLocal takes, and trusting every
// connection; Main stops it (and testcontainers' reaper removes it if
// this process dies).
func startContainer(ctx context.Context) (*server, error) {
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{Started: true,
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        containerImage,
			Env:          map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust"},
			Cmd:          []string{"postgres", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=500"},
			ExposedPorts: []string{"5432/tcp"},
			// The image's entrypoint starts a server on the socket only to
			// initialise, then the real one: ready twice.
			WaitingFor: wait.ForAll(wait.ForLog("database system is ready to accept connections").WithOccurrence(2),
				wait.ForListeningPort("5432/tcp")).WithDeadline(2 * time.Minute),
		}})
	if err != nil {
		return nil, err
	}
	host, err := c.Host(ctx)
	if err == nil {
		var port interface{ Port() string }
		if port, err = c.MappedPort(ctx, "5432/tcp"); err == nil {
			admin := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", net.JoinHostPort(host, port.Port()))
			return &server{adminDSN: admin, dsnFor: func(db string) string { return withDatabase(admin, db) },
				stop: func() { _ = testcontainers.TerminateContainer(c) }}, nil
		}
	}
	_ = testcontainers.TerminateContainer(c)
	return nil, err
}

// ServerOptions say how StartServer runs its server.
type ServerOptions struct {
	// Durable keeps PostgreSQL's own defaults for fsync, synchronous_commit
	// and full_page_writes (all on), so that a commit costs what it costs
	// in production: for benchmarks. Without it the server runs as the
	// tests' server does, with all three off, for speed.
	Durable bool
	// Settings are more run-time parameters, each "name=value"
	// ("shared_preload_libraries=pg_stat_statements", say).
	Settings []string
	// Dir, if set, is where the server keeps its files (created, and
	// removed by stop); by default a new temporary directory.
	Dir string
}

// RequireServerBinaries skips t when this machine has no PostgreSQL server
// binaries for StartServer, and fails it instead when CI=true: a test that
// needs its own server must never turn green by skipping in CI.
func RequireServerBinaries(t testing.TB) {
	t.Helper()
	if _, err := findBinaries(); err != nil {
		if mustFail(os.Getenv) {
			t.Fatalf("PostgreSQL server binaries are required in CI: %v", err)
		}
		t.Skipf("no PostgreSQL server binaries: %v", err)
	}
}

// StartServer starts a throwaway PostgreSQL server from the server binaries
// on this machine (initdb and postgres, on PATH or under
// /usr/lib/postgresql/*/bin), for programs rather than tests: a benchmark
// command, say. Its data lives in a new temporary directory; it listens on
// a free loopback port, runs as the postgres user when the caller is root,
// trusts every local connection, and is killed if the caller dies. It
// returns the DSN of the server's maintenance database ("postgres", as the
// superuser postgres) and stop, which stops the server and removes its
// files. It ignores RACKPLANE_TEST_POSTGRES_DSN: it always starts its own.
func StartServer(opts ServerOptions) (dsn string, stop func(), err error) {
	bin, err := findBinaries()
	if err != nil {
		return "", nil, err
	}
	s, err := startLocal(bin, opts)
	if err != nil {
		return "", nil, err
	}
	return s.adminDSN, sync.OnceFunc(s.stop), nil
}

// WithDatabase returns dsn, a URL (postgres://…) or key=value DSN, pointed
// at database db instead.
func WithDatabase(dsn, db string) string { return withDatabase(dsn, db) }

// withDatabase points a DSN, URL or key=value form, at database db.
func withDatabase(dsn, db string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + db
		return u.String()
	}
	return dsn + " dbname=" + db
}

func findBinaries() (string, error) {
	if path, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(path), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no initdb on PATH or under /usr/lib/postgresql/*/bin")
}

func startLocal(bin string, opts ServerOptions) (*server, error) {
	dir, err := opts.Dir, error(nil)
	if dir == "" {
		dir, err = os.MkdirTemp("", "rackplane-pg-")
	} else {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"-D", data, "-k", dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"}
	if !opts.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	for _, setting := range opts.Settings {
		args = append(args, "-c", setting)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	// The server dies with the test binary even if Main never runs, and in
	// its own process group a Ctrl-C meant for the caller does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	logFile, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{
		stop: func() {
			cmd.Process.Signal(syscall.SIGINT) //nolint:errcheck // already gone is fine
			cmd.Wait()                         //nolint:errcheck // exit status of a stopped server
			os.RemoveAll(dir)
		},
		adminDSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		dsnFor: func(db string) string {
			return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, db)
		},
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		db, err := sql.Open("pgx", s.adminDSN)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err = db.PingContext(ctx)
			cancel()
			db.Close()
		}
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			return nil, fmt.Errorf("postgres did not accept connections: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
