package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/pkg/logging"
	"github.com/rackplane/rackplane/pkg/settings"
	"github.com/spf13/pflag"
)

// Config is everything a nexus process needs.
type Config struct {
	// ID names this nexus replica; sagas it runs are owned by it.
	ID string `koanf:"id" help:"this nexus replica's UUID"`
	// InternalListen serves NexusInternal (sled-agents); never exposed
	// on the external listener (SPEC N10).
	InternalListen string `koanf:"internal_listen" help:"internal gRPC listen address for sled-agents"`
	// ExternalListen serves the REST API (Oxide API v1 subset).
	ExternalListen string `koanf:"external_listen" help:"REST API listen address"`
	// ExternalGRPCListen serves NexusExternal over gRPC, through the same
	// interceptors as the REST gateway. Loopback by default.
	ExternalGRPCListen string `koanf:"external_grpc_listen" help:"external gRPC listen address (NexusExternal for gRPC clients)"`
	// MetricsListen serves Prometheus metrics at /metrics, without auth:
	// its own listener, never the external one, where every request needs
	// a token (SPEC N10, N11). Loopback by default.
	MetricsListen string `koanf:"metrics_listen" help:"Prometheus metrics listen address (/metrics, no auth)"`
	// TLSDir holds the replica's rack identity (S1): the rack CA's
	// certificate (ca.crt) and its own, naming nexus/<id> (tls.crt,
	// tls.key), as `nexus rack-certs` writes them. The internal listener
	// and every call to a sled are mutual TLS with it (S2); there is no
	// plaintext inside the rack. A replica needs it to start (tools that
	// only open the database, such as `nexus token create`, do not).
	TLSDir string `koanf:"tls_dir" help:"directory of the replica's rack certificates (ca.crt, tls.crt, tls.key)"`
	// ExternalTLSCertFile and ExternalTLSKeyFile, when both are set, serve
	// the REST API and external gRPC over HTTPS with that certificate
	// (S5), one an operator's clients trust; without them they are plain
	// HTTP, for loopback.
	ExternalTLSCertFile string `koanf:"external_tls_cert_file" help:"certificate (PEM) of the external API's HTTPS; with external_tls_key_file"`
	ExternalTLSKeyFile  string `koanf:"external_tls_key_file" help:"private key (PEM) of the external API's HTTPS; with external_tls_cert_file"`
	// DatabaseBackend is "sqlite" (default) or "postgres".
	DatabaseBackend string `koanf:"database_backend" help:"sqlite or postgres"`
	// DatabaseURL is the SQLite file path or the PostgreSQL DSN.
	DatabaseURL string `koanf:"database_url" help:"SQLite file path or PostgreSQL DSN"`
	LogLevel    string `koanf:"log_level" help:"debug, info, warn or error"`
	LogFormat   string `koanf:"log_format" help:"json or console"`
	// Background task periods (N8) and the reincarnation cooldown.
	InstanceWatcherPeriod duration.Duration `koanf:"instance_watcher_period" help:"period of the instance watcher (N8)"`
	InstanceUpdaterPeriod duration.Duration `koanf:"instance_updater_period" help:"period of the background instance updater (N8)"`
	ReincarnationPeriod   duration.Duration `koanf:"reincarnation_period" help:"period of reincarnation of failed instances (N8)"`
	ReincarnationCooldown duration.Duration `koanf:"reincarnation_cooldown" help:"least time between two automatic restarts of an instance"`
	SledLivenessPeriod    duration.Duration `koanf:"sled_liveness_period" help:"period of the sled liveness check (N8)"`
	// SledHeartbeatTimeout is how long a sled may go without a heartbeat
	// before it is unreachable: shown so, and given no new VMM (SPEC 6).
	// It must exceed a few of the sleds' heartbeat periods (2 s by
	// default), or one late heartbeat under load reports a healthy sled.
	SledHeartbeatTimeout duration.Duration `koanf:"sled_heartbeat_timeout" help:"how long a sled may go without a heartbeat before it is unreachable and gets no new VMM"`
	// Pprof serves Go's profiles under /debug/pprof/ on the metrics
	// listener, for measuring nexus under load.
	Pprof bool `koanf:"pprof" help:"serve /debug/pprof/ on the metrics listener"`
	// The zones nexus owns (Z9), the replicas (X3, X4) and orphan VMMs
	// (N12).
	ZonesPushPeriod duration.Duration `koanf:"zones_push_period" help:"period of a zones push pass: to each sled that may lack its config, and to a tenth of the others (Z9)"`
	InventoryPeriod duration.Duration `koanf:"inventory_period" help:"period of collecting each sled's inventory (Z9)"`
	// The REST API's limits on a request body (SPEC 7): beyond the size
	// it is 413, and one that does not arrive in time is 408.
	RequestBodyMaxBytes    int64             `koanf:"request_body_max_bytes" help:"largest REST request body accepted, in bytes (413 beyond it)"`
	RequestBodyTimeout     duration.Duration `koanf:"request_body_timeout" help:"how long a REST request body may take to arrive (408 after it)"`
	ExpungeConfirmPeriod   duration.Duration `koanf:"expunge_confirm_period" help:"period of asking the sleds of expunged zones not yet confirmed gone for their inventory (Z9)"`
	ReplicaCheckPeriod     duration.Duration `koanf:"replica_check_period" help:"how often a replica checks it has not been expunged (X3)"`
	SagaReassignmentPeriod duration.Duration `koanf:"saga_reassignment_period" help:"period of taking over the sagas of expunged replicas confirmed gone (X4)"`
	StopWishPeriod         duration.Duration `koanf:"stop_wish_period" help:"period of carrying out stop wishes a sled has not heard (N13)"`
	OrphanVMMPeriod        duration.Duration `koanf:"orphan_vmm_period" help:"period of unregistering VMMs nexus does not know (N12)"`
	// HistoryRetention is how long finished sagas (with their logs), ended
	// VMMs and resolved migrations are kept once they ended, before the
	// prune_history task deletes them (N14); HistoryPrunePeriod is how
	// often it looks.
	HistoryRetention   duration.Duration `koanf:"history_retention" help:"how long finished sagas, ended VMMs and resolved migrations are kept before they are pruned (N14)"`
	HistoryPrunePeriod duration.Duration `koanf:"history_prune_period" help:"period of pruning history older than history_retention (N14)"`
	// SledUnreachableBound is how long force-terminate keeps retrying a
	// sled-agent that does not answer before it answers 503 (SPEC F7).
	SledUnreachableBound duration.Duration `koanf:"sled_unreachable_bound" help:"how long force-terminate retries a sled before answering 503 (F7)"`
	// UpdaterLockWaitBound is how long force-terminate waits for another
	// update holding the instance's updater lock before it answers 503
	// naming the holder (SPEC F6).
	UpdaterLockWaitBound duration.Duration `koanf:"updater_lock_wait_bound" help:"how long force-terminate waits for an update holding the instance's updater lock before answering 503 (F6)"`
	// AuthnCacheTTL is how long a token's caller and roles are remembered
	// after the database resolved them (0: never). It bounds how long a
	// role change made through another replica takes to apply here.
	AuthnCacheTTL duration.Duration `koanf:"authn_cache_ttl" help:"how long a token's caller and roles are remembered (0: never)"`
	// ShutdownTimeout bounds the graceful stop on SIGTERM: requests in
	// flight finish and sagas reach a durable point, or are cut. Whoever
	// sends the SIGTERM must wait longer before its SIGKILL: the sled-agent
	// (zone_stop_timeout, 15 s) and Docker (its default grace period is
	// 10 s; docker-compose.yml sets its own), so the default is 8 s.
	ShutdownTimeout duration.Duration `koanf:"shutdown_timeout" help:"bound on the graceful stop on SIGTERM (shorter than whatever sends SIGKILL after it)"`
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
		SledLivenessPeriod:    duration.Duration(5 * time.Second),
		// Three heartbeats of 2 s and one more second: detected within
		// SPEC 6's 10 s, yet two heartbeats lost or late report nothing.
		SledHeartbeatTimeout:   duration.Duration(7 * time.Second),
		ZonesPushPeriod:        duration.Duration(time.Minute),
		InventoryPeriod:        duration.Duration(10 * time.Second),
		ExpungeConfirmPeriod:   duration.Duration(time.Second),
		RequestBodyMaxBytes:    1 << 20,
		RequestBodyTimeout:     duration.Duration(10 * time.Second),
		ReplicaCheckPeriod:     duration.Duration(time.Second),
		SagaReassignmentPeriod: duration.Duration(10 * time.Second),
		OrphanVMMPeriod:        duration.Duration(time.Minute),
		StopWishPeriod:         duration.Duration(30 * time.Second),
		// A week: an incident can be looked into, saga logs and ended
		// VMMs included, for days after it; the tables hold about a
		// week of the rack's churn, whatever its age.
		HistoryRetention:     duration.Duration(7 * 24 * time.Hour),
		HistoryPrunePeriod:   duration.Duration(time.Hour),
		SledUnreachableBound: duration.Duration(10 * time.Second),
		UpdaterLockWaitBound: duration.Duration(10 * time.Second),
		AuthnCacheTTL:        duration.Duration(time.Second),
		ShutdownTimeout:      duration.Duration(8 * time.Second),
	}
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
	if (c.ExternalTLSCertFile == "") != (c.ExternalTLSKeyFile == "") {
		bad("external_tls_cert_file", "and external_tls_key_file go together: set both for HTTPS, or neither")
	}
	for setting, d := range map[string]duration.Duration{"instance_watcher_period": c.InstanceWatcherPeriod,
		"instance_updater_period": c.InstanceUpdaterPeriod, "reincarnation_period": c.ReincarnationPeriod,
		"reincarnation_cooldown": c.ReincarnationCooldown, "sled_liveness_period": c.SledLivenessPeriod,
		"sled_heartbeat_timeout": c.SledHeartbeatTimeout,
		"sled_unreachable_bound": c.SledUnreachableBound, "zones_push_period": c.ZonesPushPeriod,
		"updater_lock_wait_bound": c.UpdaterLockWaitBound,
		"inventory_period":        c.InventoryPeriod, "replica_check_period": c.ReplicaCheckPeriod,
		"expunge_confirm_period":   c.ExpungeConfirmPeriod,
		"request_body_timeout":     c.RequestBodyTimeout,
		"saga_reassignment_period": c.SagaReassignmentPeriod, "orphan_vmm_period": c.OrphanVMMPeriod,
		"stop_wish_period": c.StopWishPeriod, "history_retention": c.HistoryRetention,
		"history_prune_period": c.HistoryPrunePeriod, "shutdown_timeout": c.ShutdownTimeout} {
		if d <= 0 {
			bad(setting, "must be positive")
		}
	}
	if c.RequestBodyMaxBytes <= 0 {
		bad("request_body_max_bytes", "must be positive")
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

// Flags are nexus's command-line settings: --config, and one flag per
// setting, each overriding the file and the environment when given.
type Flags struct{ loader *settings.Loader[Config] }

// EnvPrefix starts every environment variable nexus reads, such as
// RACKPLANE_NEXUS_DATABASE_URL.
const EnvPrefix = "RACKPLANE_NEXUS_"

// BindFlags registers nexus's flags on fs.
func BindFlags(fs *pflag.FlagSet) *Flags {
	return &Flags{loader: settings.Bind(fs, settings.Spec{EnvPrefix: EnvPrefix, RelativeToFile: filePaths}, Default())}
}

// filePaths: a relative path in a file (the certificates', a SQLite
// database's) is relative to the file; a PostgreSQL DSN is no path.
func filePaths(get func(string) string) []string {
	paths := []string{"tls_dir", "external_tls_cert_file", "external_tls_key_file"}
	if backend := get("database_backend"); backend == "" || backend == "sqlite" {
		paths = append(paths, "database_url")
	}
	return paths
}

// Resolve combines defaults, the config file, the environment and the
// flags given, and validates the result.
func (f *Flags) Resolve() (Config, error) {
	cfg, err := f.loader.Load()
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Args is the nexus command line that gives it c.
func (c Config) Args() []string { return settings.Args(c, Default()) }
