package config

import (
	"errors"
	"fmt"
	"net"
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

// Config is everything a nexus process needs.
type Config struct {
	// ID names this nexus replica; sagas it runs are owned by it.
	ID string `json:"id"`
	// InternalListen serves NexusInternal (sled-agents); never exposed
	// on the external listener (SPEC N10).
	InternalListen string `json:"internal_listen"`
	// ExternalListen serves the REST API (Oxide API v1 subset).
	ExternalListen string `json:"external_listen"`
	// ExternalGRPCListen serves NexusExternal over gRPC, through the same
	// interceptors as the REST gateway. Loopback by default.
	ExternalGRPCListen string `json:"external_grpc_listen"`
	// MetricsListen serves Prometheus metrics at /metrics, without auth:
	// its own listener, never the external one, where every request needs
	// a token (SPEC N10, N11). Loopback by default.
	MetricsListen string `json:"metrics_listen"`
	// DatabaseBackend is "sqlite" (default) or "postgres".
	DatabaseBackend string `json:"database_backend"`
	// DatabaseURL is the SQLite file path or the PostgreSQL DSN.
	DatabaseURL string `json:"database_url"`
	LogLevel    string `json:"log_level"`
	LogFormat   string `json:"log_format"`
	// Background task periods (N8) and the reincarnation cooldown.
	InstanceWatcherPeriod duration.Duration `json:"instance_watcher_period"`
	InstanceUpdaterPeriod duration.Duration `json:"instance_updater_period"`
	ReincarnationPeriod   duration.Duration `json:"reincarnation_period"`
	ReincarnationCooldown duration.Duration `json:"reincarnation_cooldown"`
	SledLivenessPeriod    duration.Duration `json:"sled_liveness_period"`
	// SledUnreachableBound is how long force-terminate keeps retrying a
	// sled-agent that does not answer before it answers 503 (SPEC F7).
	SledUnreachableBound duration.Duration `json:"sled_unreachable_bound"`
	// AuthnCacheTTL is how long a token's caller and roles are remembered
	// after the database resolved them (0: never). It bounds how long a
	// role change made through another replica takes to apply here.
	AuthnCacheTTL duration.Duration `json:"authn_cache_ttl"`
}

// Default returns the defaults every file and flag set starts from.
func Default() Config {
	return Config{
		InternalListen:     "127.0.0.1:12221",
		ExternalListen:     "127.0.0.1:12220",
		ExternalGRPCListen: "127.0.0.1:0",
		MetricsListen:      "127.0.0.1:12223",
		DatabaseBackend:    "sqlite",
		DatabaseURL:        ".local/nexus/nexus.db",
		LogLevel:           "info",
		LogFormat:          "json",

		InstanceWatcherPeriod: duration.Duration(30 * time.Second),
		InstanceUpdaterPeriod: duration.Duration(30 * time.Second),
		ReincarnationPeriod:   duration.Duration(time.Minute),
		ReincarnationCooldown: duration.Duration(5 * time.Minute),
		SledLivenessPeriod:    duration.Duration(30 * time.Second),
		SledUnreachableBound:  duration.Duration(10 * time.Second),
		AuthnCacheTTL:         duration.Duration(time.Second),
	}
}

// Load reads a YAML or JSON file over the defaults; unknown keys are errors.
// A relative SQLite path is relative to the file.
func Load(path string) (Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, err
	}
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	if cfg.DatabaseBackend == "sqlite" && !filepath.IsAbs(cfg.DatabaseURL) {
		cfg.DatabaseURL = filepath.Join(filepath.Dir(path), cfg.DatabaseURL)
	}
	return cfg, nil
}

// Validate reports every problem, each naming its setting.
func (c Config) Validate() error {
	var problems []string
	bad := func(setting, format string, args ...any) {
		problems = append(problems, setting+": "+fmt.Sprintf(format, args...))
	}
	if id, err := uuid.Parse(c.ID); err != nil || len(c.ID) != 36 || id == uuid.Nil {
		bad("id", "%q is not a UUID", c.ID)
	}
	listens := map[string]string{"internal_listen": c.InternalListen, "external_listen": c.ExternalListen,
		"external_grpc_listen": c.ExternalGRPCListen, "metrics_listen": c.MetricsListen}
	taken := map[string]string{}
	for _, setting := range []string{"internal_listen", "external_listen", "external_grpc_listen", "metrics_listen"} {
		addr := listens[setting]
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			bad(setting, "%q is not host:port", addr)
			continue
		}
		if port == "0" {
			continue // any free port: never the same as another
		}
		if other, ok := taken[addr]; ok {
			bad(setting, "%q is also %s; each listener needs its own address", addr, other)
		}
		taken[addr] = setting
	}
	switch c.DatabaseBackend {
	case "sqlite", "postgres":
	default:
		bad("database_backend", "%q is not sqlite or postgres", c.DatabaseBackend)
	}
	if c.DatabaseURL == "" {
		bad("database_url", "is required")
	}
	for setting, d := range map[string]duration.Duration{"instance_watcher_period": c.InstanceWatcherPeriod,
		"instance_updater_period": c.InstanceUpdaterPeriod, "reincarnation_period": c.ReincarnationPeriod,
		"reincarnation_cooldown": c.ReincarnationCooldown, "sled_liveness_period": c.SledLivenessPeriod,
		"sled_unreachable_bound": c.SledUnreachableBound} {
		if d <= 0 {
			bad(setting, "must be positive")
		}
	}
	if c.AuthnCacheTTL < 0 {
		bad("authn_cache_ttl", "must not be negative")
	}
	if err := logging.CheckLevel(c.LogLevel); err != nil {
		bad("log_level", "%v", err)
	}
	if err := logging.CheckFormat(c.LogFormat); err != nil {
		bad("log_format", "%v", err)
	}
	if len(problems) > 0 {
		return errors.New("invalid nexus configuration:\n  " + strings.Join(problems, "\n  "))
	}
	return nil
}

// Flags are the command-line settings; each overrides the file when given.
type Flags struct {
	fs         *pflag.FlagSet
	configPath string
	values     Config
}

// BindFlags registers nexus's flags on fs.
func BindFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	d := Default()
	fs.StringVar(&f.configPath, "config", "", "YAML or JSON config file; flags given explicitly override it")
	fs.StringVar(&f.values.ID, "id", "", "this nexus replica's UUID")
	fs.StringVar(&f.values.InternalListen, "internal-listen", d.InternalListen, "internal gRPC listen address for sled-agents")
	fs.StringVar(&f.values.ExternalListen, "external-listen", d.ExternalListen, "REST API listen address")
	fs.StringVar(&f.values.ExternalGRPCListen, "external-grpc-listen", d.ExternalGRPCListen, "external gRPC listen address (NexusExternal for gRPC clients)")
	fs.StringVar(&f.values.MetricsListen, "metrics-listen", d.MetricsListen, "Prometheus metrics listen address (/metrics, no auth)")
	fs.StringVar(&f.values.DatabaseBackend, "database-backend", d.DatabaseBackend, "sqlite or postgres")
	fs.StringVar(&f.values.DatabaseURL, "database-url", d.DatabaseURL, "SQLite file path or PostgreSQL DSN")
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
		"id":                   func() { cfg.ID = f.values.ID },
		"internal-listen":      func() { cfg.InternalListen = f.values.InternalListen },
		"external-listen":      func() { cfg.ExternalListen = f.values.ExternalListen },
		"external-grpc-listen": func() { cfg.ExternalGRPCListen = f.values.ExternalGRPCListen },
		"metrics-listen":       func() { cfg.MetricsListen = f.values.MetricsListen },
		"database-backend":     func() { cfg.DatabaseBackend = f.values.DatabaseBackend },
		"database-url":         func() { cfg.DatabaseURL = f.values.DatabaseURL },
		"log-level":            func() { cfg.LogLevel = f.values.LogLevel },
		"log-format":           func() { cfg.LogFormat = f.values.LogFormat },
	}
	f.fs.Visit(func(fl *pflag.Flag) {
		if apply, ok := overrides[fl.Name]; ok {
			apply()
		}
	})
	return cfg, cfg.Validate()
}
