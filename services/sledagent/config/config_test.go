package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const pool = "oxp_0b0e0000-0000-4000-8000-000000000001"

func resolve(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("sled-agent", pflag.ContinueOnError)
	f := BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f.Resolve()
}

func TestFlagsOverrideTheEnvironmentWhichOverridesTheFileAndPathsAreRelativeToIt(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sled.yaml")
	if err := os.WriteFile(file, []byte(`
sled_id: 1a5e0000-0000-4000-8000-000000000001
data_dir: state
tls_dir: pki
zpools: [`+pool+`]
ncpus: 8
reconciler_retry_initial: 100ms
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// The same rule as nexus's: file < RACKPLANE_SLED_AGENT_<SETTING> <
	// flags.
	t.Setenv("RACKPLANE_SLED_AGENT_NCPUS", "12")
	t.Setenv("RACKPLANE_SLED_AGENT_MEMORY_GIB", "96")
	cfg, err := resolve(t, "--config", file, "--ncpus", "16", "--listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NCPUs != 16 || cfg.ListenAddress != "127.0.0.1:0" || cfg.MemoryGiB != 96 {
		t.Errorf("flags did not override the environment, or the environment the file: %+v", cfg)
	}
	if time.Duration(cfg.ReconcilerRetryInitial) != 100*time.Millisecond {
		t.Errorf("file or defaults lost: %+v", cfg)
	}
	wantLedger := []string{filepath.Join(dir, "state", "m2-0"), filepath.Join(dir, "state", "m2-1")}
	if cfg.TLSDir != filepath.Join(dir, "pki") {
		t.Errorf("tls_dir %q is not relative to the file", cfg.TLSDir)
	}
	if strings.Join(cfg.LedgerDirs, ",") != strings.Join(wantLedger, ",") || cfg.ZoneStateDir != filepath.Join(dir, "state", "zones") {
		t.Errorf("data_dir defaults wrong: %v, %s", cfg.LedgerDirs, cfg.ZoneStateDir)
	}
}

func TestInvalidSettingsAreAllNamed(t *testing.T) {
	_, err := resolve(t, "--sled-id", "sled-7", "--ledger-dir", "/tmp/a", "--zpool", "tank", "--ncpus", "0", "--log-level", "loud",
		"--zone-command", "dinosaur=/bin/true", "--nexus-address", "nowhere")
	if err == nil {
		t.Fatal("invalid settings accepted")
	}
	for _, setting := range []string{"sled_id", "tls_dir", "ledger_dirs", "zpools", "ncpus", "zone_state_dir", "log_level", "zone_commands",
		"zone_root", "nexus_address"} {
		if !strings.Contains(err.Error(), setting+":") {
			t.Errorf("error does not name %s:\n%v", setting, err)
		}
	}
}

func TestUnknownKeysInTheFileAreRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sled.yaml")
	if err := os.WriteFile(file, []byte("sled_idd: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := resolve(t, "--config", file); err == nil || !strings.Contains(err.Error(), "sled_idd") {
		t.Fatalf("misspelt key: %v", err)
	}
}

func TestTheShippedSampleConfigIsValid(t *testing.T) {
	if _, err := resolve(t, "--config", "../../../deploy/config/sled-agent-sim.yaml"); err != nil {
		t.Fatal(err)
	}
}

// A zone runs in its own directory, so a relative program path would not
// name what the operator meant (Z10).
func TestARelativeZoneProgramIsRefused(t *testing.T) {
	_, err := resolve(t, "--sled-id", "1a5e0000-0000-4000-8000-000000000001", "--data-dir", t.TempDir(), "--tls-dir", "pki",
		"--zpool", "oxp_0b0e0000-0000-4000-8000-000000000001", "--zone-command", "nexus=./bin/nexus")
	if err == nil || !strings.Contains(err.Error(), "zone_commands:") || !strings.Contains(err.Error(), "./bin/nexus") {
		t.Fatalf("a relative zone program: %v, want an error naming zone_commands and the path", err)
	}
	if _, err := resolve(t, "--sled-id", "1a5e0000-0000-4000-8000-000000000001", "--data-dir", t.TempDir(), "--tls-dir", "pki",
		"--zpool", "oxp_0b0e0000-0000-4000-8000-000000000001", "--zone-command", "nexus=nexus --log-format json"); err != nil {
		t.Fatalf("a program found on PATH: %v", err)
	}
}

// A hung zone shutdown fails after zone_shutdown_timeout (Z5); a bound no
// longer than zone_stop_timeout would end every halt before its SIGKILL.
func TestZoneShutdownTimeoutMustBePositiveAndOutlastTheStopTimeout(t *testing.T) {
	base := []string{"--sled-id", "1a5e0000-0000-4000-8000-000000000001", "--data-dir", t.TempDir(), "--tls-dir", "pki",
		"--zpool", pool}
	cfg, err := resolve(t, base...)
	if err != nil || time.Duration(cfg.ZoneShutdownTimeout) != 60*time.Second {
		t.Fatalf("default zone_shutdown_timeout %s (%v), want 60s", time.Duration(cfg.ZoneShutdownTimeout), err)
	}
	for _, bad := range [][]string{
		{"--zone-shutdown-timeout", "0s"},
		{"--zone-shutdown-timeout", "-1s"},
		{"--zone-shutdown-timeout", "15s", "--zone-stop-timeout", "15s"},
	} {
		if _, err := resolve(t, append(base, bad...)...); err == nil || !strings.Contains(err.Error(), "zone_shutdown_timeout:") {
			t.Errorf("%v: %v, want an error naming zone_shutdown_timeout", bad, err)
		}
	}
	if cfg, err := resolve(t, append(base, "--zone-shutdown-timeout", "200ms", "--zone-stop-timeout", "100ms")...); err != nil ||
		time.Duration(cfg.ZoneShutdownTimeout) != 200*time.Millisecond {
		t.Fatalf("zone_shutdown_timeout 200ms: %v, %s", err, time.Duration(cfg.ZoneShutdownTimeout))
	}
}
