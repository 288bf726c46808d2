package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// FuzzConfigFile (S6): any bytes as nexus's --config file are refused with
// an error or give a configuration that passes its own validation; never a
// panic.
func FuzzConfigFile(f *testing.F) {
	f.Add([]byte("id: 6a5c1f7e-0d5c-4d0e-9a3e-1f0c4e0b7a11\ndatabase_url: /tmp/x.db\ninventory_period: 10s\n"))
	f.Add([]byte(`{"database_backend": "postgres", "database_url": "postgres://x", "request_body_max_bytes": -1}`))
	f.Add([]byte("nexus_address: [a, b]\nlog_level: loud\n"))
	f.Add([]byte("inventory_period: 99999999999999999999h\n"))
	f.Add([]byte("\xff\x00: ["))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "nexus.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		fs := pflag.NewFlagSet("nexus", pflag.ContinueOnError)
		flags := BindFlags(fs)
		if err := fs.Parse([]string{"--config", path}); err != nil {
			t.Fatal(err)
		}
		cfg, err := flags.Resolve()
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Resolve accepted a configuration its validation refuses: %v", err)
		}
	})
}
