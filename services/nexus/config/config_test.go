package config

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func resolve(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("nexus", pflag.ContinueOnError)
	f := BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f.Resolve()
}

func TestTheShippedSampleConfigIsValidAndFlagsOverrideIt(t *testing.T) {
	cfg, err := resolve(t, "--config", "../../../deploy/config/nexus.yaml", "--internal-listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.InternalListen != "127.0.0.1:0" || !strings.HasSuffix(cfg.DatabaseURL, ".local/nexus/nexus.db") ||
		!strings.HasPrefix(cfg.TLSDir, "../../../.local/pki/") {
		t.Fatalf("resolved %+v", cfg)
	}
}

func TestInvalidSettingsAreAllNamed(t *testing.T) {
	_, err := resolve(t, "--id", "nexus-1", "--database-backend", "mysql", "--internal-listen", "12221")
	for _, setting := range []string{"id", "database_backend", "internal_listen"} {
		if err == nil || !strings.Contains(err.Error(), setting+":") {
			t.Errorf("error does not name %s: %v", setting, err)
		}
	}
}

func TestN11_MetricsHaveTheirOwnValidatedListener(t *testing.T) {
	id := "--id=4e000000-0000-4000-8000-000000000001"
	cfg, err := resolve(t, id, "--tls-dir", "pki", "--tls-dir", "pki")
	if err != nil || cfg.MetricsListen != "127.0.0.1:12223" {
		t.Fatalf("default metrics_listen %q, %v; want 127.0.0.1:12223", cfg.MetricsListen, err)
	}
	if cfg, err := resolve(t, id, "--tls-dir", "pki", "--metrics-listen", "0.0.0.0:9100"); err != nil || cfg.MetricsListen != "0.0.0.0:9100" {
		t.Fatalf("--metrics-listen: %q, %v", cfg.MetricsListen, err)
	}
	if _, err := resolve(t, id, "--tls-dir", "pki", "--metrics-listen", "9100"); err == nil || !strings.Contains(err.Error(), "metrics_listen:") {
		t.Fatalf("a bad metrics_listen is not named: %v", err)
	}
	// The external listener answers only with a token: metrics there
	// would be either unreachable to Prometheus or a hole in N10.
	_, err = resolve(t, id, "--tls-dir", "pki", "--metrics-listen", "127.0.0.1:12220", "--external-listen", "127.0.0.1:12220")
	if err == nil || !strings.Contains(err.Error(), "metrics_listen:") || !strings.Contains(err.Error(), "external_listen") {
		t.Fatalf("metrics on the external listener: %v, want an error naming both", err)
	}
	if _, err := resolve(t, id, "--tls-dir", "pki", "--metrics-listen", "127.0.0.1:0", "--external-listen", "127.0.0.1:0",
		"--internal-listen", "127.0.0.1:0"); err != nil {
		t.Fatalf("several listeners on port 0 (any free port): %v", err)
	}
}

// Every setting follows one rule: defaults < config file <
// RACKPLANE_NEXUS_<SETTING> < flags, so a secret such as the database URL
// can come from the environment instead of the command line.
func TestEnvironmentOverridesTheFileAndFlagsOverrideTheEnvironment(t *testing.T) {
	t.Setenv("RACKPLANE_NEXUS_DATABASE_URL", "/from/env.db")
	t.Setenv("RACKPLANE_NEXUS_INTERNAL_LISTEN", "127.0.0.1:7001")
	cfg, err := resolve(t, "--config", "../../../deploy/config/nexus.yaml", "--internal-listen", "127.0.0.1:7002")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DatabaseURL != "/from/env.db" || cfg.InternalListen != "127.0.0.1:7002" {
		t.Fatalf("database_url %q (want the environment's over the file's), internal_listen %q (want the flag's over the environment's)",
			cfg.DatabaseURL, cfg.InternalListen)
	}
}
