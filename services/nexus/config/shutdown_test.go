package config

import (
	"strings"
	"testing"
	"time"
)

// shutdown_timeout defaults to 8 s, shorter than Docker's default grace
// period (10 s) and the sled-agent's zone_stop_timeout (15 s), which send
// SIGKILL after it; it is read from the environment and the flags, and one
// that is not positive is refused with the setting named.
func TestShutdownTimeoutDefaultsBelowWhatSendsSIGKILLAndIsChecked(t *testing.T) {
	id, tls := "--id=4e000000-0000-4000-8000-000000000001", "--tls-dir=pki"
	cfg, err := resolve(t, id, tls)
	if err != nil || time.Duration(cfg.ShutdownTimeout) != 8*time.Second {
		t.Fatalf("default shutdown_timeout %v (%v); want 8s", cfg.ShutdownTimeout, err)
	}
	t.Setenv(EnvPrefix+"SHUTDOWN_TIMEOUT", "5s")
	if cfg, err = resolve(t, id, tls); err != nil || time.Duration(cfg.ShutdownTimeout) != 5*time.Second {
		t.Fatalf("from the environment: %v (%v); want 5s", cfg.ShutdownTimeout, err)
	}
	if cfg, err = resolve(t, id, tls, "--shutdown-timeout=3s"); err != nil || time.Duration(cfg.ShutdownTimeout) != 3*time.Second {
		t.Fatalf("a flag over the environment: %v (%v); want 3s", cfg.ShutdownTimeout, err)
	}
	for _, value := range []string{"0s", "-1s"} {
		if _, err := resolve(t, id, tls, "--shutdown-timeout="+value); err == nil || !strings.Contains(err.Error(), "shutdown_timeout:") {
			t.Errorf("--shutdown-timeout=%s: %v, want an error naming shutdown_timeout", value, err)
		}
	}
}
