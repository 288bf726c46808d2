package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/logging"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Duration is a time.Duration written as "250ms" in files.
type Duration = duration.Duration

// Config is everything a sled-agent process needs.
type Config struct {
	// ListenAddress is the gRPC listener, host:port (port 0 picks one).
	ListenAddress string `json:"listen_address"`
	SledID        string `json:"sled_id"`
	// DataDir, when set, supplies defaults for LedgerDirs (data_dir/m2-0 and
	// data_dir/m2-1) and ZoneStateDir (data_dir/zones).
	DataDir string `json:"data_dir"`
	// LedgerDirs hold one copy each of every ledger; at least two, like a
	// sled's two M.2 disks.
	LedgerDirs []string `json:"ledger_dirs"`
	// Zpools are the sled's pools, named oxp_<uuid>.
	Zpools    []string `json:"zpools"`
	NCPUs     uint32   `json:"ncpus"`
	MemoryGiB uint64   `json:"memory_gib"`
	// ZoneStateDir is where the simulated zone runtime keeps its zones.
	ZoneStateDir string `json:"zone_state_dir"`
	// Reconciler retry backoff after a pass that left errors.
	ReconcilerRetryInitial Duration `json:"reconciler_retry_initial"`
	ReconcilerRetryMax     Duration `json:"reconciler_retry_max"`
	// NexusAddress is nexus's internal gRPC address. Empty runs the agent
	// alone: it neither registers nor publishes VMM updates.
	NexusAddress string `json:"nexus_address"`
	// AdvertiseAddress is the address nexus is told to reach this agent at;
	// empty means the address the listener got.
	AdvertiseAddress string   `json:"advertise_address"`
	HeartbeatPeriod  Duration `json:"heartbeat_period"`
	// Publication of VMM updates to nexus: retry backoff and the bound on
	// one attempt (V5).
	PublishRetryInitial Duration `json:"publish_retry_initial"`
	PublishRetryMax     Duration `json:"publish_retry_max"`
	NexusCallTimeout    Duration `json:"nexus_call_timeout"`
	// HypervisorMode is "auto" (transitions complete after
	// VMMTransitionDelay) or "explicit" (only when stepped through
	// SledAgentSim).
	HypervisorMode     string   `json:"hypervisor_mode"`
	VMMTransitionDelay Duration `json:"vmm_transition_delay"`
	// ShutdownTimeout bounds the graceful stop on SIGTERM.
	ShutdownTimeout Duration `json:"shutdown_timeout"`
	LogLevel        string   `json:"log_level"`
	LogFormat       string   `json:"log_format"`
}

// Default returns the defaults every file and flag set starts from.
func Default() Config {
	return Config{
		ListenAddress:          "127.0.0.1:12345",
		NCPUs:                  64,
		MemoryGiB:              512,
		ReconcilerRetryInitial: Duration(250 * time.Millisecond),
		ReconcilerRetryMax:     Duration(30 * time.Second),
		HeartbeatPeriod:        Duration(10 * time.Second),
		PublishRetryInitial:    Duration(250 * time.Millisecond),
		PublishRetryMax:        Duration(3 * time.Minute),
		NexusCallTimeout:       Duration(5 * time.Second),
		HypervisorMode:         "auto",
		VMMTransitionDelay:     Duration(50 * time.Millisecond),
		ShutdownTimeout:        Duration(10 * time.Second),
		LogLevel:               "info",
		LogFormat:              "json",
	}
}

// Load reads a YAML or JSON file over the defaults. Unknown keys are errors,
// so that a misspelt setting is not silently ignored.
func Load(path string) (Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, err
	}
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	// Relative paths in a file are relative to the file, not to wherever
	// the agent happens to be started.
	base := filepath.Dir(path)
	rel := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	rel(&cfg.DataDir)
	rel(&cfg.ZoneStateDir)
	for i := range cfg.LedgerDirs {
		rel(&cfg.LedgerDirs[i])
	}
	return cfg, nil
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
	if c.NexusAddress != "" {
		if _, _, err := net.SplitHostPort(c.NexusAddress); err != nil {
			bad("nexus_address", "%q is not host:port", c.NexusAddress)
		}
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

// Flags are the command-line settings; each overrides the file when given.
type Flags struct {
	fs         *pflag.FlagSet
	configPath string
	values     Config
	durations  map[string]*time.Duration
}

// BindFlags registers the sled-agent's flags on fs.
func BindFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{fs: fs, durations: map[string]*time.Duration{}}
	d := Default()
	duration := func(name string, def Duration, usage string) {
		v := new(time.Duration)
		fs.DurationVar(v, name, time.Duration(def), usage)
		f.durations[name] = v
	}
	fs.StringVar(&f.configPath, "config", "", "YAML or JSON config file; flags given explicitly override it")
	fs.StringVar(&f.values.ListenAddress, "listen", d.ListenAddress, "gRPC listen address host:port")
	fs.StringVar(&f.values.SledID, "sled-id", "", "this sled's UUID")
	fs.StringVar(&f.values.DataDir, "data-dir", "", "directory for default ledger dirs (m2-0, m2-1) and the zone state dir")
	fs.StringSliceVar(&f.values.LedgerDirs, "ledger-dir", nil, "ledger directory, repeat for each copy (at least two)")
	fs.StringSliceVar(&f.values.Zpools, "zpool", nil, "zpool name oxp_<uuid>, repeatable")
	fs.Uint32Var(&f.values.NCPUs, "ncpus", d.NCPUs, "CPUs the sled offers")
	fs.Uint64Var(&f.values.MemoryGiB, "memory-gib", d.MemoryGiB, "memory the sled offers, in GiB")
	fs.StringVar(&f.values.ZoneStateDir, "zone-state-dir", "", "state directory of the simulated zone runtime")
	duration("reconciler-retry-initial", d.ReconcilerRetryInitial, "first retry delay after a reconciler pass with errors")
	duration("reconciler-retry-max", d.ReconcilerRetryMax, "cap of the reconciler retry delay")
	fs.StringVar(&f.values.NexusAddress, "nexus-address", "", "nexus internal gRPC address; empty runs without nexus")
	fs.StringVar(&f.values.AdvertiseAddress, "advertise-address", "", "address nexus reaches this agent at (default: the listener's)")
	duration("heartbeat-period", d.HeartbeatPeriod, "period of heartbeats to nexus")
	duration("publish-retry-initial", d.PublishRetryInitial, "first retry delay of a VMM update nexus did not take")
	duration("publish-retry-max", d.PublishRetryMax, "cap of the VMM update retry delay")
	duration("nexus-call-timeout", d.NexusCallTimeout, "bound on one call to nexus")
	fs.StringVar(&f.values.HypervisorMode, "hypervisor-mode", d.HypervisorMode, "simulated hypervisor: auto or explicit")
	duration("vmm-transition-delay", d.VMMTransitionDelay, "time one simulated VMM transition takes in auto mode")
	duration("shutdown-timeout", d.ShutdownTimeout, "bound on the graceful stop")
	fs.StringVar(&f.values.LogLevel, "log-level", d.LogLevel, "debug, info, warn or error")
	fs.StringVar(&f.values.LogFormat, "log-format", d.LogFormat, "json or console")
	return f
}

// Resolve combines defaults, the config file and explicitly given flags, and
// validates the result.
func (f *Flags) Resolve() (Config, error) {
	cfg := Default()
	if f.configPath != "" {
		var err error
		if cfg, err = Load(f.configPath); err != nil {
			return cfg, err
		}
	}
	overrides := map[string]func(){
		"listen":            func() { cfg.ListenAddress = f.values.ListenAddress },
		"sled-id":           func() { cfg.SledID = f.values.SledID },
		"data-dir":          func() { cfg.DataDir = f.values.DataDir },
		"ledger-dir":        func() { cfg.LedgerDirs = f.values.LedgerDirs },
		"zpool":             func() { cfg.Zpools = f.values.Zpools },
		"ncpus":             func() { cfg.NCPUs = f.values.NCPUs },
		"memory-gib":        func() { cfg.MemoryGiB = f.values.MemoryGiB },
		"zone-state-dir":    func() { cfg.ZoneStateDir = f.values.ZoneStateDir },
		"nexus-address":     func() { cfg.NexusAddress = f.values.NexusAddress },
		"advertise-address": func() { cfg.AdvertiseAddress = f.values.AdvertiseAddress },
		"hypervisor-mode":   func() { cfg.HypervisorMode = f.values.HypervisorMode },
		"log-level":         func() { cfg.LogLevel = f.values.LogLevel },
		"log-format":        func() { cfg.LogFormat = f.values.LogFormat },
	}
	durationSettings := map[string]*Duration{
		"reconciler-retry-initial": &cfg.ReconcilerRetryInitial,
		"reconciler-retry-max":     &cfg.ReconcilerRetryMax,
		"heartbeat-period":         &cfg.HeartbeatPeriod,
		"publish-retry-initial":    &cfg.PublishRetryInitial,
		"publish-retry-max":        &cfg.PublishRetryMax,
		"nexus-call-timeout":       &cfg.NexusCallTimeout,
		"vmm-transition-delay":     &cfg.VMMTransitionDelay,
		"shutdown-timeout":         &cfg.ShutdownTimeout,
	}
	for name, setting := range durationSettings {
		overrides[name] = func() { *setting = Duration(*f.durations[name]) }
	}
	f.fs.Visit(func(fl *pflag.Flag) {
		if apply, ok := overrides[fl.Name]; ok {
			apply()
		}
	})
	err := cfg.Finish()
	return cfg, err
}
