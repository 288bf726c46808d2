package composetest

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
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
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/racksetup"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
)

// repoRoot is where docker-compose.yml is; tests run in this package's
// directory.
var repoRoot = filepath.Join("..", "..")

var sledAgents = []string{"sled-agent-1", "sled-agent-2", "sled-agent-3"}

// rackNetwork is the compose network the sleds have fixed addresses on.
const rackNetwork = "rack"

func TestComposeFileHasPostgresRackSetupTokenAndThreeSledAgents(t *testing.T) {
	p := loadProject(t)
	want := append([]string{"postgres", "rack-certs", "rack-setup", "token"}, sledAgents...)
	slices.Sort(want)
	got := p.ServiceNames()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v (replicas are zones of the sleds, not services)", got, want)
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
	if built != 6 {
		t.Errorf("%d services built from our Dockerfiles, want 6 (rack-certs, rack-setup, token, 3 sled-agents)", built)
	}
}

// S1: rack-certs issues from the plan rack-setup uses, into the volume
// every sled-agent reads its identity from, before any starts; each sled
// mounts its own directory of it only (never the CA's key nor another
// member's), and rack setup the operator's.
func TestS1_EachSledReadsOnlyItsOwnIdentityFromTheCertificatesRackCertsIssued(t *testing.T) {
	p := loadProject(t)
	_, certArgs := commandLine(t, p.Services["rack-certs"])
	var planPath, dir string
	for _, a := range certArgs {
		if v, ok := strings.CutPrefix(a, "--plan="); ok {
			planPath = v
		}
		if v, ok := strings.CutPrefix(a, "--dir="); ok {
			dir = v
		}
	}
	vol := volumeAt(p.Services["rack-certs"], planPath)
	setupVol := volumeAt(p.Services["rack-setup"], "/etc/rackplane/rack-plan.yaml")
	if vol == nil || setupVol == nil || vol.Source != setupVol.Source {
		t.Fatalf("rack-certs issues from %v, rack-setup sets up %v: want the same plan", vol, setupVol)
	}
	pki := volumeAt(p.Services["rack-certs"], dir)
	if dir == "" || pki == nil {
		t.Fatalf("rack-certs writes into %q, which is no volume", dir)
	}
	certs := racksetup.Certificates{Dir: ""}
	// mountsOnly checks that svc's tls_dir is the pki volume's sub, alone,
	// read-only, and that no other mount of that volume exists.
	mountsOnly := func(name string, svc types.ServiceConfig, tlsDir, sub string) {
		t.Helper()
		var mounts []types.ServiceVolumeConfig
		for _, v := range svc.Volumes {
			if v.Source == pki.Source {
				mounts = append(mounts, v)
			}
		}
		if len(mounts) != 1 || mounts[0].Target != tlsDir || !mounts[0].ReadOnly || mounts[0].Volume == nil ||
			mounts[0].Volume.Subpath != strings.TrimPrefix(sub, "/") {
			t.Errorf("%s mounts the certificates volume as %+v; want only %s of it, read-only, at its tls_dir %s", name, mounts, sub, tlsDir)
		}
	}
	for _, name := range sledAgents {
		svc := p.Services[name]
		cfg := sledAgentConfig(t, p, name)
		mountsOnly(name, svc, cfg.TLSDir, certs.SledDir(cfg.SledID))
		if dep, ok := svc.DependsOn["rack-certs"]; !ok || dep.Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s does not wait for rack-certs to complete", name)
		}
		if !cfg.FaultInjection {
			t.Errorf("%s does not serve fault injection; the seed scenarios need it on a simulated rack", name)
		}
	}
	_, setupArgs := commandLine(t, p.Services["rack-setup"])
	var setupTLS string
	for _, a := range setupArgs {
		if v, ok := strings.CutPrefix(a, "--tls-dir="); ok {
			setupTLS = v
		}
	}
	mountsOnly("rack-setup", p.Services["rack-setup"], setupTLS, certs.OperatorDir())
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

// Z11: the plan rack-setup runs is the rack compose starts: its sleds are
// the sled-agents, in order, at the addresses they advertise; each replica
// is a zone on a pool of its sled, listening at its sled's fixed address;
// and every sled-agent calls every replica.
func TestTheRackPlanIsTheRackComposeStarts(t *testing.T) {
	p := loadProject(t)
	plan := rackPlan(t, p)
	if len(plan.Sleds) != len(sledAgents) {
		t.Fatalf("the plan has %d sleds, want one per sled-agent (%d)", len(plan.Sleds), len(sledAgents))
	}
	var internal []string
	for i, name := range sledAgents {
		cfg, sled := sledAgentConfig(t, p, name), plan.Sleds[i]
		if sled.ID != cfg.SledID || sled.Address != cfg.AdvertiseAddress {
			t.Errorf("plan sled %d is %s at %s, want %s's id %s at %s", i, sled.ID, sled.Address, name, cfg.SledID, cfg.AdvertiseAddress)
		}
		ip := fixedAddress(t, p, name)
		nexusZones := 0
		for _, z := range sled.Zones {
			if !slices.Contains(cfg.Zpools, z.Pool) {
				t.Errorf("%s: zone %s is on pool %s, which the sled does not have (%v)", name, z.ID, z.Pool, cfg.Zpools)
			}
			if z.Kind != model.ZoneNexus {
				continue
			}
			nexusZones++
			internal = append(internal, z.Address)
			if host, _ := splitHostPort(t, z.Address); host != ip {
				t.Errorf("%s: nexus zone %s listens at %s, but the sled's address is %s", name, z.ID, z.Address, ip)
			}
		}
		if nexusZones != 1 {
			t.Errorf("%s runs %d nexus zones, want 1", name, nexusZones)
		}
	}
	slices.Sort(internal)
	for _, name := range sledAgents {
		got := slices.Sorted(slices.Values(sledAgentConfig(t, p, name).NexusAddress))
		if !slices.Equal(got, internal) {
			t.Errorf("%s: --nexus-address %v, want every replica's internal address %v", name, got, internal)
		}
	}
}

// Z10: each sled-agent runs its nexus zones as processes of a nexus binary
// its image carries.
func TestSledAgentsRunNexusZonesFromTheirImage(t *testing.T) {
	p := loadProject(t)
	for _, name := range sledAgents {
		command := sledAgentConfig(t, p, name).ZoneCommands["nexus"]
		if command == "" {
			t.Errorf("%s has no --zone-command for nexus: its nexus zones would be simulated", name)
			continue
		}
		dockerfile, err := os.ReadFile(dockerfilePath(p.Services[name]))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(dockerfile), "./services/nexus/cmd/nexus") ||
			!strings.Contains(string(dockerfile), filepath.Dir(command)) {
			t.Errorf("%s runs nexus zones as %s, but its Dockerfile does not build nexus into %s", name, command, filepath.Dir(command))
		}
	}
}

func TestRackSetupAndTokenUseThePostgresService(t *testing.T) {
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
	plan := rackPlan(t, p)
	token := nexusConfig(t, p, "token")
	for what, db := range map[string]struct{ backend, url string }{
		"the rack plan":     {plan.Database.Backend, plan.Database.URL},
		"the token service": {token.DatabaseBackend, token.DatabaseURL},
	} {
		if db.backend != "postgres" {
			t.Errorf("%s: database backend %q, want postgres", what, db.backend)
		}
		dsn, err := url.Parse(db.url)
		if err != nil {
			t.Fatalf("%s: DSN: %v", what, err)
		}
		password, _ := dsn.User.Password()
		if dsn.Hostname() != "postgres" || dsn.Port() != "5432" || dsn.User.Username() != env("POSTGRES_USER") ||
			password != env("POSTGRES_PASSWORD") || strings.TrimPrefix(dsn.Path, "/") != env("POSTGRES_DB") {
			t.Errorf("%s: DSN %q does not match the postgres service (host postgres:5432, its user, password and database)", what, db.url)
		}
	}
	if token.DatabaseURL != plan.Database.URL {
		t.Errorf("the token service's database %q is not the plan's %q", token.DatabaseURL, plan.Database.URL)
	}
	if dep, ok := p.Services["rack-setup"].DependsOn["postgres"]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("rack-setup depends on postgres %+v, want condition %s", dep, types.ServiceConditionHealthy)
	}
	for _, name := range sledAgents {
		if _, ok := p.Services["rack-setup"].DependsOn[name]; !ok {
			t.Errorf("rack-setup does not depend on %s", name)
		}
	}
	// The token command migrates the schema too: before rack setup is done
	// it would race the replicas' migrations, and find no rack.
	if dep := p.Services["token"].DependsOn["rack-setup"]; dep.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("token depends on rack-setup %+v, want condition %s", dep, types.ServiceConditionCompletedSuccessfully)
	}
}

// Only the replicas' REST APIs leave the rack network; their internal API
// and the sled-agents' are for the rack (SPEC N10).
func TestEachSledPublishesOnlyItsReplicasRESTAPI(t *testing.T) {
	p := loadProject(t)
	plan := rackPlan(t, p)
	published := map[string]string{}
	for i, name := range sledAgents {
		ports := p.Services[name].Ports
		if len(ports) != 1 {
			t.Errorf("%s publishes %+v, want exactly its replica's REST port", name, ports)
			continue
		}
		var rest string
		for _, z := range plan.Sleds[i].Zones {
			if z.Nexus != nil {
				_, rest = splitHostPort(t, z.Nexus.ExternalAddress)
			}
		}
		if got := ports[0].Target; got != mustPort(t, rest) {
			t.Errorf("%s publishes container port %d, but its replica's REST API listens on port %s", name, got, rest)
		}
		if ports[0].HostIP != "127.0.0.1" {
			t.Errorf("%s publishes on %q, want the host's loopback only", name, ports[0].HostIP)
		}
		claim(t, published, ports[0].Published, name, "host port")
	}
}

// The one-shot services run subcommands whose own flags (--plan,
// --principal, --fleet-admin) the config package does not know, and whose
// commands live in package main: only the real binary can say it accepts
// them. --help makes cobra parse every flag, then stop before touching
// any database.
func TestOneShotCommandLinesAreAcceptedByTheNexusBinary(t *testing.T) {
	nexus := filepath.Join(t.TempDir(), "nexus")
	build := exec.Command("go", "build", "-o", nexus, "./services/nexus/cmd/nexus")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building nexus: %v\n%s", err, out)
	}
	p := loadProject(t)
	for _, name := range []string{"rack-certs", "rack-setup", "token"} {
		_, args := commandLine(t, p.Services[name])
		if out, err := exec.Command(nexus, append(args, "--help")...).CombinedOutput(); err != nil {
			t.Errorf("%s: nexus %s --help: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
}

// rackPlan loads, and so validates, the plan the rack-setup service is
// given: the file compose mounts at the path of its --plan.
func rackPlan(t *testing.T, p *types.Project) racksetup.Plan {
	t.Helper()
	svc := p.Services["rack-setup"]
	_, args := commandLine(t, svc)
	var path string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--plan="); ok {
			path = v
		}
	}
	vol := volumeAt(svc, path)
	if path == "" || vol == nil || vol.Type != types.VolumeTypeBind {
		t.Fatalf("rack-setup: --plan=%q is not a file bound from the repository", path)
	}
	plan, err := racksetup.LoadPlan(vol.Source)
	if err != nil {
		t.Fatalf("rack-setup's plan: %v", err)
	}
	return plan
}

// fixedAddress is a service's IPv4 address on the rack network, which must
// be set (a zone's address is an IP, Z2) and inside the network's subnet.
func fixedAddress(t *testing.T, p *types.Project, name string) string {
	t.Helper()
	attachment := p.Services[name].Networks[rackNetwork]
	if attachment == nil || attachment.Ipv4Address == "" {
		t.Fatalf("%s has no fixed address on the %s network", name, rackNetwork)
	}
	addr, err := netip.ParseAddr(attachment.Ipv4Address)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for _, pool := range p.Networks[rackNetwork].Ipam.Config {
		if subnet, err := netip.ParsePrefix(pool.Subnet); err == nil && subnet.Contains(addr) {
			return addr.String()
		}
	}
	t.Fatalf("%s: %s is outside the %s network's subnets", name, addr, rackNetwork)
	return ""
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
// positional arguments; of its subcommands, `token create` takes the
// server's database flags and more, `rack-setup` flags of its own, which
// the one-shot test checks against the binary.
func parseNexus(t *testing.T, args []string) nexusconfig.Config {
	t.Helper()
	fs := pflag.NewFlagSet("nexus", pflag.ContinueOnError)
	flags := nexusconfig.BindFlags(fs)
	var subcommand []string
	switch {
	case len(args) >= 2 && args[0] == "token" && args[1] == "create":
		subcommand = args[:2]
	case len(args) >= 1 && (args[0] == "rack-setup" || args[0] == "rack-certs"):
		subcommand = args[:1]
	}
	fs.ParseErrorsAllowlist.UnknownFlags = subcommand != nil
	if err := fs.Parse(args); err != nil {
		t.Fatalf("nexus %v: %v", args, err)
	}
	if positional := fs.Args(); !slices.Equal(positional, subcommand) {
		t.Fatalf("nexus %v: unexpected arguments %v", args, positional)
	}
	if len(subcommand) == 1 && subcommand[0] != "token" {
		// Its settings are the plan, which rackPlan checks.
		return nexusconfig.Config{}
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
