package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// RequireCommand returns the path of a program a test runs. Without it the
// test is skipped on a developer's machine and fails in CI (CI=true), so
// that CI never goes green by not running it.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI: %v", name, err)
	}
	t.Skipf("no %s here: %v", name, err)
	return ""
}
