package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// N14: history_retention and history_prune_period default to a week and an
// hour, are read from the file and the flags, and a value that is no
// positive duration is refused with the setting named.
func TestN14_HistoryRetentionAndPrunePeriodAreReadAndChecked(t *testing.T) {
	id, tls := "--id=4e000000-0000-4000-8000-000000000001", "--tls-dir=pki"
	cfg, err := resolve(t, id, tls)
	if err != nil || time.Duration(cfg.HistoryRetention) != 7*24*time.Hour || time.Duration(cfg.HistoryPrunePeriod) != time.Hour {
		t.Fatalf("defaults: retention %v, period %v (%v); want 168h and 1h", cfg.HistoryRetention, cfg.HistoryPrunePeriod, err)
	}
	file := filepath.Join(t.TempDir(), "nexus.yaml")
	if err := os.WriteFile(file, []byte("history_retention: 72h\nhistory_prune_period: 5m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = resolve(t, id, tls, "--config", file)
	if err != nil || time.Duration(cfg.HistoryRetention) != 72*time.Hour || time.Duration(cfg.HistoryPrunePeriod) != 5*time.Minute {
		t.Fatalf("from a file: retention %v, period %v (%v); want 72h and 5m", cfg.HistoryRetention, cfg.HistoryPrunePeriod, err)
	}
	cfg, err = resolve(t, id, tls, "--config", file, "--history-retention", "720h")
	if err != nil || time.Duration(cfg.HistoryRetention) != 720*time.Hour {
		t.Fatalf("a flag over the file: retention %v (%v); want 720h", cfg.HistoryRetention, err)
	}
	for _, bad := range []struct{ flag, value, setting string }{
		{"--history-retention", "0s", "history_retention:"},
		{"--history-retention", "-24h", "history_retention:"},
		{"--history-prune-period", "0s", "history_prune_period:"},
		{"--history-prune-period", "-1m", "history_prune_period:"},
	} {
		if _, err := resolve(t, id, tls, bad.flag, bad.value); err == nil || !strings.Contains(err.Error(), bad.setting) {
			t.Errorf("%s %s: %v, want an error naming %s", bad.flag, bad.value, err, bad.setting)
		}
	}
	fs := pflag.NewFlagSet("nexus", pflag.ContinueOnError)
	BindFlags(fs)
	if err := fs.Parse([]string{"--history-retention", "a week"}); err == nil || !strings.Contains(err.Error(), "history-retention") {
		t.Errorf("a retention that is no duration: %v, want an error naming the flag", err)
	}
	if err := os.WriteFile(file, []byte("history_prune_period: hourly\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := resolve(t, id, tls, "--config", file); err == nil || !strings.Contains(err.Error(), "history_prune_period") {
		t.Errorf("a period that is no duration in the file: %v, want an error naming it", err)
	}
}
