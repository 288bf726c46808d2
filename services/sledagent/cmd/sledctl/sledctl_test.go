package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/services/racktest"
	"github.com/rackplane/rackplane/services/sledagent/sledagenttest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

// run runs the sledctl binary as the test's operator (SLEDCTL_TLS_DIR), as
// a person would, and returns its standard output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runAs(t, rackpkitest.For(t).OperatorDir(), args...)
}

// runAs runs the sledctl binary with tlsDir as SLEDCTL_TLS_DIR; a failed
// run's error is what sledctl wrote to its standard error.
func runAs(t *testing.T, tlsDir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(racktest.Build(t, "github.com/rackplane/rackplane/services/sledagent/cmd/sledctl"), args...)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "SLEDCTL_TLS_DIR=") }),
		"SLEDCTL_TLS_DIR="+tlsDir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("sledctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func TestZ6_OperatorPutsAZonesConfigAndReadsTheInventory(t *testing.T) {
	a := sledagenttest.Start(t)
	nexusID, ntpID := uuid.NewString(), uuid.NewString()
	file := filepath.Join(t.TempDir(), "zones.yaml")
	yamlText := "generation: 3\nzones:\n" +
		"  - id: " + nexusID + "\n    kind: nexus\n    filesystem_pool: " + a.Config.Zpools[0] + "\n    address: \"[fd00:1122:3344:101::3]:12221\"\n" +
		"    nexus:\n      external_address: \"[fd00:1122:3344:101::3]:12220\"\n      metrics_address: \"[fd00:1122:3344:101::3]:12223\"\n" +
		"      database_backend: postgres\n      database_url: postgresql://nexus@db/omicron\n" +
		"  - id: " + ntpID + "\n    kind: internal_ntp\n    filesystem_pool: " + a.Config.Zpools[1] + "\n    address: \"[fd00:1122:3344:101::4]:123\"\n"
	if err := os.WriteFile(file, []byte(yamlText), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "--addr", a.Server.Addr(), "zones", "put", file)
	if err != nil || !strings.Contains(out, "generation 3 ledgered") {
		t.Fatalf("zones put: %q, %v", out, err)
	}
	a.WaitReconciled(3, sledagenttest.AllOK)
	vmmID := a.Register()

	out, err = run(t, "--addr", a.Server.Addr(), "inventory")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{a.Config.SledID, nexusID, "internal_ntp", "[fd00:1122:3344:101::3]:12221", "idle", vmmID, "starting"} {
		if !strings.Contains(out, want) {
			t.Errorf("table output lacks %q:\n%s", want, out)
		}
	}

	out, err = run(t, "--addr", a.Server.Addr(), "inventory", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var inv struct {
		SledID         string `json:"sled_id"`
		LedgeredConfig struct {
			Generation string `json:"generation"`
		} `json:"ledgered_config"`
	}
	if err := json.Unmarshal([]byte(out), &inv); err != nil {
		t.Fatalf("json output does not parse: %v\n%s", err, out)
	}
	if inv.SledID != a.Config.SledID || inv.LedgeredConfig.Generation != "3" {
		t.Fatalf("json output %+v", inv)
	}
}

func TestZ2_OperatorSeesEveryFieldTheSledRefused(t *testing.T) {
	a := sledagenttest.Start(t)
	file := filepath.Join(t.TempDir(), "zones.json")
	bad := `{"generation": 1, "zones": [{"id": "nope", "kind": "nexus", "filesystem_pool": "oxp_x", "address": "[fd00::1]:1"}]}`
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "--addr", a.Server.Addr(), "zones", "put", file)
	if err == nil || !strings.Contains(err.Error(), "config.zones[0].id") || !strings.Contains(err.Error(), "config.zones[0].filesystem_pool") {
		t.Fatalf("error %v does not name both refused fields", err)
	}
	if err := os.WriteFile(file, []byte(`{"generation": 1, "zones": [{"kind": "toaster"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "--addr", a.Server.Addr(), "zones", "put", file); err == nil || !strings.Contains(err.Error(), "zones[0].kind") {
		t.Fatalf("unknown kind: %v", err)
	}
}

// S2, S4: sledctl speaks to a sled only as the operator of its rack: no
// --tls-dir is a clear error, and an operator of another rack is refused.
func TestS2_SledctlNeedsTheRacksOperatorCertificate(t *testing.T) {
	a := sledagenttest.Start(t)
	if _, err := runAs(t, "", "--addr", a.Server.Addr(), "inventory"); err == nil || !strings.Contains(err.Error(), "--tls-dir is required") {
		t.Fatalf("no --tls-dir: %v, want an error naming --tls-dir", err)
	}
	if _, err := runAs(t, rackpkitest.New(t).OperatorDir(), "--addr", a.Server.Addr(), "inventory"); err == nil || !strings.Contains(err.Error(), "Unavailable") {
		t.Fatalf("another rack's operator: %v, want the connection refused", err)
	}
}
