package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/logging"
	"github.com/rackplane/rackplane/pkg/settings"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
	"github.com/spf13/pflag"
)

// Duration is a time.Duration written as "250ms" in files.
type Duration = duration.Duration

// Config is everything a sled-agent process needs.
type Config struct {
	// ListenAddress is the gRPC listener, host:port (port 0 picks one).
	ListenAddress string `koanf:"listen_address" flag:"listen" help:"gRPC listen address host:port"`
	SledID        string `koanf:"sled_id" help:"this sled's UUID"`
	// TLSDir holds the sled's rack identity (S1): the rack CA's
	// certificate (ca.crt) and its own, naming sled/<sled_id> (tls.crt,
	// tls.key), and under zones/<zone id> the identity of each nexus zone
	// it runs, as `nexus rack-certs` writes them. Every call in or out is
	// mutual TLS with it (S2); there is no plaintext inside the rack.
	TLSDir string `koanf:"tls_dir" help:"directory of the sled's rack certificates (ca.crt, tls.crt, tls.key, zones/<id>/)"`
	// FaultInjection serves SledAgentSim, the fault injection API (V7),
	// and its call faults; off, neither exists (S4). The local cluster and
	// the test harness turn it on.
	FaultInjection bool `koanf:"fault_injection" help:"serve SledAgentSim, the fault injection API (simulated racks and tests only)"`
	// DataDir, when set, supplies defaults for LedgerDirs (data_dir/m2-0 and
	// data_dir/m2-1) and ZoneStateDir (data_dir/zones).
	DataDir string `koanf:"data_dir" help:"directory for default ledger dirs (m2-0, m2-1) and the zone state dir"`
	// LedgerDirs hold one copy each of every ledger; at least two, like a
	// sled's two M.2 disks.
	LedgerDirs []string `koanf:"ledger_dirs" flag:"ledger-dir" help:"ledger directory, repeat for each copy (at least two)"`
	// Zpools are the sled's pools, named oxp_<uuid>.
	Zpools    []string `koanf:"zpools" flag:"zpool" help:"zpool name oxp_<uuid>, repeatable"`
	NCPUs     uint32   `koanf:"ncpus" help:"CPUs the sled offers"`
	MemoryGiB uint64   `koanf:"memory_gib" help:"memory the sled offers, in GiB"`
	// ZoneCommands runs the zones of each kind listed as processes (Z10):
	// the command line to run, which learns the zone's id, addresses and,
	// for nexus, its settings from its environment. Other kinds stay in
	// the simulated runtime.
	ZoneCommands map[string]string `koanf:"zone_commands" flag:"zone-command" help:"kind=command: run zones of kind as processes of command (absolute path or name on PATH; arguments split on spaces, no quoting; no commas), repeatable (e.g. nexus=/usr/local/bin/nexus)"`
	// ZoneRoot holds the process zones, in <zone_root>/<pool>/zones/<id>:
	// each its log and its record.
	ZoneRoot string `koanf:"zone_root" help:"directory of the process zones' pools (default data_dir/pools)"`
	// ZoneStopTimeout is how long a process zone has to exit after SIGTERM
	// before it is killed.
	ZoneStopTimeout Duration `koanf:"zone_stop_timeout" help:"bound between SIGTERM and SIGKILL when a process zone stops"`
	// ZoneShutdownTimeout bounds each step of a zone's shutdown; a step
	// that outlasts it is a failed shutdown, reported and retried (Z5).
	ZoneShutdownTimeout Duration `koanf:"zone_shutdown_timeout" help:"bound on one step of a zone's shutdown; a step that outlasts it fails and is retried (longer than zone_stop_timeout)"`
	// ZoneStateDir is where the simulated zone runtime keeps its zones.
	ZoneStateDir string `koanf:"zone_state_dir" help:"state directory of the simulated zone runtime"`
	// Reconciler retry backoff after a pass that left errors.
	ReconcilerRetryInitial Duration `koanf:"reconciler_retry_initial" help:"first retry delay after a reconciler pass with errors"`
	ReconcilerRetryMax     Duration `koanf:"reconciler_retry_max" help:"cap of the reconciler retry delay"`
	// NexusAddress are the internal gRPC addresses of the nexus replicas,
	// called round robin. None runs the agent alone: it neither registers
	// nor publishes VMM updates.
	NexusAddress []string `koanf:"nexus_address" help:"nexus internal gRPC address, repeat for each replica; none runs without nexus"`
	// AdvertiseAddress is the address nexus is told to reach this agent at;
	// empty means the address the listener got.
	AdvertiseAddress string   `koanf:"advertise_address" help:"address nexus reaches this agent at (default: the listener's)"`
	HeartbeatPeriod  Duration `koanf:"heartbeat_period" help:"period of heartbeats to nexus"`
	// Publication of VMM updates to nexus: retry backoff and the bound on
	// one attempt (V5).
	PublishRetryInitial Duration `koanf:"publish_retry_initial" help:"first retry delay of a VMM update nexus did not take"`
	PublishRetryMax     Duration `koanf:"publish_retry_max" help:"cap of the VMM update retry delay"`
	NexusCallTimeout    Duration `koanf:"nexus_call_timeout" help:"bound on one call to nexus"`
	// HypervisorMode is "auto" (transitions complete after
	// VMMTransitionDelay) or "explicit" (only when stepped through
	// SledAgentSim).
	HypervisorMode     string   `koanf:"hypervisor_mode" help:"simulated hypervisor: auto or explicit"`
	VMMTransitionDelay Duration `koanf:"vmm_transition_delay" help:"time one simulated VMM transition takes in auto mode"`
	// ShutdownTimeout bounds the graceful stop on SIGTERM.
	ShutdownTimeout Duration `koanf:"shutdown_timeout" help:"bound on the graceful stop"`
	LogLevel        string   `koanf:"log_level" help:"debug, info, warn or error"`
	LogFormat       string   `koanf:"log_format" help:"json or console"`
}

// Default returns the defaults every file and flag set starts from.
func Default() Config {
	return Config{
		ListenAddress:          "127.0.0.1:12345",
		NCPUs:                  64,
		MemoryGiB:              512,
		ReconcilerRetryInitial: Duration(250 * time.Millisecond),
		ReconcilerRetryMax:     Duration(30 * time.Second),
		// Nexus calls a sled unreachable after 7 s without a heartbeat
		// (sled_heartbeat_timeout): three of these fit in it.
		HeartbeatPeriod:     Duration(2 * time.Second),
		PublishRetryInitial: Duration(250 * time.Millisecond),
		PublishRetryMax:     Duration(3 * time.Minute),
		NexusCallTimeout:    Duration(5 * time.Second),
		HypervisorMode:      "auto",
		VMMTransitionDelay:  Duration(50 * time.Millisecond),
		ShutdownTimeout:     Duration(10 * time.Second),
		ZoneStopTimeout:     Duration(15 * time.Second),
		ZoneShutdownTimeout: Duration(time.Minute),
		LogLevel:            "info",
		LogFormat:           "json",
	}
}

// Finish fills the defaults derived from DataDir and validates the result.
func (c *Config) Finish() error {
	if c.DataDir != "" {
		if len(c.LedgerDirs) == 0 {
			c.LedgerDirs = []string{filepath.Join(c.DataDir, "m2-0"), filepath.Join(c.DataDir, "m2-1")}
		}
		if c.ZoneStateDir == "" {
			c.ZoneStateDir = filepath.Join(c.DataDir, "zones")
		}
		if c.ZoneRoot == "" {
			c.ZoneRoot = filepath.Join(c.DataDir, "pools")
		}
	}
	return c.Validate()
}

// Validate reports every problem, each naming its setting.
func (c Config) Validate() error {
	var problems []string
	bad := func(setting, format string, args ...any) {
		problems = append(problems, setting+": "+fmt.Sprintf(format, args...))
	}
	if _, err := netip.ParseAddrPort(c.ListenAddress); err != nil && !strings.HasPrefix(c.ListenAddress, "localhost:") {
		bad("listen_address", "%q is not host:port", c.ListenAddress)
	}
	if id, err := uuid.Parse(c.SledID); err != nil || len(c.SledID) != 36 || id == uuid.Nil {
		bad("sled_id", "%q is not a UUID", c.SledID)
	}
	if c.TLSDir == "" {
		bad("tls_dir", "is required: the sled's rack certificates (ca.crt, tls.crt, tls.key), written by `nexus rack-certs`")
	}
	if len(c.LedgerDirs) < 2 {
		bad("ledger_dirs", "needs at least two directories (or data_dir), got %d", len(c.LedgerDirs))
	}
	seen := map[string]bool{}
	for _, d := range c.LedgerDirs {
		abs, _ := filepath.Abs(d)
		if seen[abs] {
			bad("ledger_dirs", "%q is listed twice", d)
		}
		seen[abs] = true
	}
	if len(c.Zpools) == 0 {
		bad("zpools", "needs at least one zpool")
	}
	pools := map[string]bool{}
	for _, z := range c.Zpools {
		id, ok := strings.CutPrefix(z, "oxp_")
		if _, err := uuid.Parse(id); !ok || err != nil || len(id) != 36 {
			bad("zpools", "%q is not named oxp_<uuid>", z)
		}
		if pools[z] {
			bad("zpools", "%q is listed twice", z)
		}
		pools[z] = true
	}
	if c.NCPUs == 0 {
		bad("ncpus", "must be at least 1")
	}
	if c.MemoryGiB == 0 {
		bad("memory_gib", "must be at least 1")
	}
	if c.ZoneStateDir == "" {
		bad("zone_state_dir", "is required (or data_dir)")
	}
	if c.ReconcilerRetryInitial <= 0 {
		bad("reconciler_retry_initial", "must be positive")
	}
	if c.ReconcilerRetryMax < c.ReconcilerRetryInitial {
		bad("reconciler_retry_max", "must be at least reconciler_retry_initial")
	}
	for _, addr := range c.NexusAddress {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("nexus_address", "%q is not host:port", addr)
		}
	}
	for kind, command := range c.ZoneCommands {
		if zoneconfig.Kind(kind).Proto() == sledagentv1.ZoneKind_ZONE_KIND_UNSPECIFIED {
			bad("zone_commands", "%q is not a zone kind", kind)
		}
		switch argv := strings.Fields(command); {
		case len(argv) == 0:
			bad("zone_commands", "the command of %s zones is empty", kind)
		case strings.ContainsRune(argv[0], filepath.Separator) && !filepath.IsAbs(argv[0]):
			// A zone runs in its own directory: a relative program path
			// would name a file there.
			bad("zone_commands", "the program of %s zones, %q, must be an absolute path or a name found on PATH", kind, argv[0])
		}
	}
	if len(c.ZoneCommands) > 0 && c.ZoneRoot == "" {
		bad("zone_root", "is required (or data_dir) when zone_commands runs zones as processes")
	}
	if c.ZoneStopTimeout <= 0 {
		bad("zone_stop_timeout", "must be positive")
	}
	switch {
	case c.ZoneShutdownTimeout <= 0:
		bad("zone_shutdown_timeout", "must be positive")
	case c.ZoneShutdownTimeout <= c.ZoneStopTimeout:
		// Halting a process zone sends SIGKILL only after
		// zone_stop_timeout: a shorter bound would end every attempt
		// before it, and a zone that ignores SIGTERM would never go.
		bad("zone_shutdown_timeout", "must be longer than zone_stop_timeout (%s), or a zone that ignores SIGTERM is never killed",
			time.Duration(c.ZoneStopTimeout))
	}
	if c.AdvertiseAddress != "" {
		if _, _, err := net.SplitHostPort(c.AdvertiseAddress); err != nil {
			bad("advertise_address", "%q is not host:port", c.AdvertiseAddress)
		}
	}
	if c.HeartbeatPeriod <= 0 {
		bad("heartbeat_period", "must be positive")
	}
	if c.PublishRetryInitial <= 0 {
		bad("publish_retry_initial", "must be positive")
	}
	if c.PublishRetryMax < c.PublishRetryInitial {
		bad("publish_retry_max", "must be at least publish_retry_initial")
	}
	if c.NexusCallTimeout <= 0 {
		bad("nexus_call_timeout", "must be positive")
	}
	switch c.HypervisorMode {
	case "auto", "explicit":
	default:
		bad("hypervisor_mode", "%q is not auto or explicit", c.HypervisorMode)
	}
	if c.VMMTransitionDelay < 0 {
		bad("vmm_transition_delay", "must not be negative")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be positive")
	}
	if err := logging.CheckLevel(c.LogLevel); err != nil {
		bad("log_level", "%v", err)
	}
	if err := logging.CheckFormat(c.LogFormat); err != nil {
		bad("log_format", "%v", err)
	}
	if len(problems) > 0 {
		return errors.New("invalid sled-agent configuration:\n  " + strings.Join(problems, "\n  "))
	}
	return nil
}

// Flags are the sled-agent's command-line settings: --config, and one flag
// per setting, each overriding the file and the environment when given.
type Flags struct{ loader *settings.Loader[Config] }

// EnvPrefix starts every environment variable the sled-agent reads, such
// as RACKPLANE_SLED_AGENT_NEXUS_ADDRESS.
const EnvPrefix = "RACKPLANE_SLED_AGENT_"

// BindFlags registers the sled-agent's flags on fs.
func BindFlags(fs *pflag.FlagSet) *Flags {
	return &Flags{loader: settings.Bind(fs, settings.Spec{EnvPrefix: EnvPrefix, RelativeToFile: paths}, Default())}
}

// paths are the settings that name directories: relative to the file they
// are written in, not to wherever the agent happens to be started.
func paths(func(string) string) []string {
	return []string{"data_dir", "zone_state_dir", "zone_root", "ledger_dirs", "tls_dir"}
}

// Resolve combines defaults, the config file, the environment and the
// flags given, fills the defaults derived from data_dir, and validates the
// result.
func (f *Flags) Resolve() (Config, error) {
	cfg, err := f.loader.Load()
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.Finish()
}

// Args is the sled-agent command line that gives it c.
func (c Config) Args() []string { return settings.Args(c, Default()) }
