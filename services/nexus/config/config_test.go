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
	if cfg.InternalListen != "127.0.0.1:0" || !strings.HasSuffix(cfg.DatabaseURL, ".local/nexus/nexus.db") {
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
