package composetest

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/spf13/pflag"

	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
)

// repoRoot is where docker-compose.yml is; tests run in this package's
// directory.
var repoRoot = filepath.Join("..", "..")

var sledAgents = []string{"sled-agent-1", "sled-agent-2", "sled-agent-3"}

func TestComposeFileHasPostgresNexusTokenAndThreeSledAgents(t *testing.T) {
	p := loadProject(t)
	want := append([]string{"nexus", "postgres", "token"}, sledAgents...)
	slices.Sort(want)
	got := p.ServiceNames()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
}

func TestEveryDockerfileNamedInComposeExistsWithAnEntrypoint(t *testing.T) {
	for name, svc := range loadProject(t).Services {
		if svc.Build == nil {
			continue
		}
		path := dockerfilePath(svc)
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s: Dockerfile: %v", name, err)
			continue
		}
		if ep := dockerfileEntrypoint(t, path); len(ep) == 0 {
			t.Errorf("%s: %s has no exec-form ENTRYPOINT", name, path)
		}
	}
}

// The heart of the check: each container's command line, entrypoint and
// command together, goes through the flag parser and Resolve (which
// validates) of the binary the entrypoint names, exactly as the binary would
// at start.
func TestEveryBuiltServiceCommandLineIsAValidConfigOfItsBinary(t *testing.T) {
	p := loadProject(t)
	built := 0
	for name, svc := range p.Services {
		if svc.Build == nil {
			continue
		}
		built++
		t.Run(name, func(t *testing.T) {
			binary, args := commandLine(t, svc)
			switch binary {
			case "nexus":
				parseNexus(t, args)
			case "sled-agent":
				parseSledAgent(t, args)
			default:
				t.Fatalf("entrypoint %q is not one of our binaries", binary)
			}
		})
	}
	if built != 5 {
		t.Errorf("%d services built from our Dockerfiles, want 5 (nexus, token, 3 sled-agents)", built)
	}
}

func TestSledAgentsHaveDistinctIdentitiesPoolsAndVolumes(t *testing.T) {
	p := loadProject(t)
	ids := map[string]string{}
	pools := map[string]string{}
	volumes := map[string]string{}
	for _, name := range sledAgents {
		cfg := sledAgentConfig(t, p, name)
		claim(t, ids, cfg.SledID, name, "sled id")
		for _, z := range cfg.Zpools {
			claim(t, pools, z, name, "zpool")
		}
		vol := volumeAt(p.Services[name], cfg.DataDir)
		if vol == nil || vol.Type != types.VolumeTypeVolume {
			t.Errorf("%s: data dir %s is not on a named volume, so its ledgers and zones would die with the container", name, cfg.DataDir)
			continue
		}
		claim(t, volumes, vol.Source, name, "volume")
	}
}

// nexus must be able to call each sled back at the address it advertises.
func TestSledAgentsAdvertiseTheirOwnServiceName(t *testing.T) {
	p := loadProject(t)
	for _, name := range sledAgents {
		cfg := sledAgentConfig(t, p, name)
		host, port := splitHostPort(t, cfg.AdvertiseAddress)
		_, listenPort := splitHostPort(t, cfg.ListenAddress)
		if host != name || port != listenPort {
			t.Errorf("%s: advertises %s, want %s:%s", name, cfg.AdvertiseAddress, name, listenPort)
		}
	}
}

func TestSledAgentsPointAtNexusInternalPort(t *testing.T) {
	p := loadProject(t)
	_, internalPort := splitHostPort(t, nexusConfig(t, p, "nexus").InternalListen)
	for _, name := range sledAgents {
		cfg := sledAgentConfig(t, p, name)
		if want := net.JoinHostPort("nexus", internalPort); len(cfg.NexusAddress) != 1 || cfg.NexusAddress[0] != want {
			t.Errorf("%s: --nexus-address %q, want %q (nexus's internal listener)", name, cfg.NexusAddress, want)
		}
		if _, ok := p.Services[name].DependsOn["nexus"]; !ok {
			t.Errorf("%s does not depend on nexus", name)
		}
	}
}

func TestNexusAndTokenUseThePostgresService(t *testing.T) {
	p := loadProject(t)
	pg := p.Services["postgres"]
	if pg.HealthCheck == nil || len(pg.HealthCheck.Test) == 0 {
		t.Fatal("postgres has no healthcheck, so service_healthy cannot work")
	}
	env := func(key string) string {
		if v := pg.Environment[key]; v != nil {
			return *v
		}
		return ""
	}
	nexus := nexusConfig(t, p, "nexus")
	for _, name := range []string{"nexus", "token"} {
		cfg := nexusConfig(t, p, name)
		if cfg.DatabaseBackend != "postgres" {
			t.Errorf("%s: database backend %q, want postgres", name, cfg.DatabaseBackend)
		}
		dsn, err := url.Parse(cfg.DatabaseURL)
		if err != nil {
			t.Fatalf("%s: DSN: %v", name, err)
		}
		password, _ := dsn.User.Password()
		if dsn.Hostname() != "postgres" || dsn.Port() != "5432" || dsn.User.Username() != env("POSTGRES_USER") ||
			password != env("POSTGRES_PASSWORD") || strings.TrimPrefix(dsn.Path, "/") != env("POSTGRES_DB") {
			t.Errorf("%s: DSN %q does not match the postgres service (host postgres:5432, its user, password and database)", name, cfg.DatabaseURL)
		}
		if cfg.ID != nexus.ID || cfg.DatabaseURL != nexus.DatabaseURL {
			t.Errorf("%s: id and database differ from nexus's", name)
		}
	}
	if dep, ok := p.Services["nexus"].DependsOn["postgres"]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("nexus depends on postgres %+v, want condition %s", dep, types.ServiceConditionHealthy)
	}
	// The token command migrates the schema too: starting it before nexus
	// finished would race two migrations.
	if dep := p.Services["token"].DependsOn["nexus"]; dep.Condition != types.ServiceConditionHealthy || p.Services["nexus"].HealthCheck == nil {
		t.Errorf("token must wait for a healthy nexus (and nexus needs a healthcheck)")
	}
}

// Only the REST API leaves the compose network; the internal API is for
// sled-agents (SPEC N10).
func TestNexusPublishesOnlyItsRESTAPI(t *testing.T) {
	p := loadProject(t)
	cfg := nexusConfig(t, p, "nexus")
	_, rest := splitHostPort(t, cfg.ExternalListen)
	ports := p.Services["nexus"].Ports
	if len(ports) != 1 || ports[0].Published == "" || ports[0].Target == 0 {
		t.Fatalf("nexus publishes %+v, want exactly the REST port", ports)
	}
	if got := ports[0].Target; got != mustPort(t, rest) {
		t.Errorf("nexus publishes container port %d, but its REST API listens on %s", got, cfg.ExternalListen)
	}
}

// The token service runs a subcommand whose own flags (--principal,
// --fleet-admin) the config package does not know, and its command lives in
// package main: only the real binary can say it accepts them. --help makes
// cobra parse every flag, then stop before touching any database.
func TestTokenServiceCommandLineIsAcceptedByTheNexusBinary(t *testing.T) {
	_, args := commandLine(t, loadProject(t).Services["token"])
	nexus := filepath.Join(t.TempDir(), "nexus")
	build := exec.Command("go", "build", "-o", nexus, "./services/nexus/cmd/nexus")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building nexus: %v\n%s", err, out)
	}
	if out, err := exec.Command(nexus, append(args, "--help")...).CombinedOutput(); err != nil {
		t.Fatalf("nexus %s --help: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func loadProject(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(repoRoot, "docker-compose.yml")},
		cli.WithWorkingDirectory(repoRoot))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("loading docker-compose.yml: %v", err)
	}
	return p
}

// commandLine returns the binary a container runs and its arguments: the
// compose entrypoint if set, else the Dockerfile's, then the command.
func commandLine(t *testing.T, svc types.ServiceConfig) (string, []string) {
	t.Helper()
	entrypoint := []string(svc.Entrypoint)
	if len(entrypoint) == 0 {
		entrypoint = dockerfileEntrypoint(t, dockerfilePath(svc))
	}
	if len(entrypoint) == 0 {
		t.Fatalf("%s: no entrypoint", svc.Name)
	}
	args := append(slices.Clone(entrypoint[1:]), svc.Command...)
	return filepath.Base(entrypoint[0]), args
}

func dockerfilePath(svc types.ServiceConfig) string {
	dir := svc.Build.Context
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(repoRoot, dir)
	}
	if filepath.IsAbs(svc.Build.Dockerfile) {
		return svc.Build.Dockerfile
	}
	return filepath.Join(dir, svc.Build.Dockerfile)
}

// dockerfileEntrypoint returns the last exec-form ENTRYPOINT of a
// Dockerfile, the one its final stage runs.
func dockerfileEntrypoint(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var entrypoint []string
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "ENTRYPOINT "); ok {
			entrypoint = nil
			if err := json.Unmarshal([]byte(rest), &entrypoint); err != nil {
				t.Fatalf("%s: ENTRYPOINT %s is not exec form: %v", path, rest, err)
			}
		}
	}
	return entrypoint
}

// parseNexus parses args with nexus's own flags. The server takes no
// positional arguments; `token create` is its only subcommand, whose extra
// flags the token test checks against the binary.
func parseNexus(t *testing.T, args []string) nexusconfig.Config {
	t.Helper()
	fs := pflag.NewFlagSet("nexus", pflag.ContinueOnError)
	flags := nexusconfig.BindFlags(fs)
	token := len(args) >= 2 && args[0] == "token" && args[1] == "create"
	if token {
		fs.ParseErrorsAllowlist.UnknownFlags = true
	}
	if err := fs.Parse(args); err != nil {
		t.Fatalf("nexus %v: %v", args, err)
	}
	if positional := fs.Args(); token && !slices.Equal(positional, []string{"token", "create"}) || !token && len(positional) > 0 {
		t.Fatalf("nexus %v: unexpected arguments %v", args, positional)
	}
	cfg, err := flags.Resolve()
	if err != nil {
		t.Fatalf("nexus %v: %v", args, err)
	}
	return cfg
}

func parseSledAgent(t *testing.T, args []string) sledconfig.Config {
	t.Helper()
	fs := pflag.NewFlagSet("sled-agent", pflag.ContinueOnError)
	flags := sledconfig.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("sled-agent %v: %v", args, err)
	}
	if fs.NArg() > 0 {
		t.Fatalf("sled-agent %v: unexpected arguments %v", args, fs.Args())
	}
	cfg, err := flags.Resolve()
	if err != nil {
		t.Fatalf("sled-agent %v: %v", args, err)
	}
	return cfg
}

func nexusConfig(t *testing.T, p *types.Project, name string) nexusconfig.Config {
	t.Helper()
	binary, args := commandLine(t, p.Services[name])
	if binary != "nexus" {
		t.Fatalf("%s runs %s, want nexus", name, binary)
	}
	return parseNexus(t, args)
}

func sledAgentConfig(t *testing.T, p *types.Project, name string) sledconfig.Config {
	t.Helper()
	binary, args := commandLine(t, p.Services[name])
	if binary != "sled-agent" {
		t.Fatalf("%s runs %s, want sled-agent", name, binary)
	}
	return parseSledAgent(t, args)
}

// volumeAt returns the volume mounted at target, if any.
func volumeAt(svc types.ServiceConfig, target string) *types.ServiceVolumeConfig {
	for i, v := range svc.Volumes {
		if v.Target == target {
			return &svc.Volumes[i]
		}
	}
	return nil
}

// claim records that owner uses value, failing if another owner does.
func claim(t *testing.T, owners map[string]string, value, owner, what string) {
	t.Helper()
	if other, ok := owners[value]; ok {
		t.Errorf("%s %s is used by both %s and %s", what, value, other, owner)
	}
	owners[value] = owner
}

func splitHostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

func mustPort(t *testing.T, port string) uint32 {
	t.Helper()
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatalf("port %q: %v", port, err)
	}
	return uint32(n)
}
