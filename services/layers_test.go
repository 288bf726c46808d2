// Package services_test checks that both services keep their layers: which
// package may import which. CI runs it with every other test.
package services_test

import (
	"go/build"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/rackplane/rackplane/"

// forbidden lists, per package (its path under services/), the packages it
// must not import: each names a package and everything under it. Layers run
// one way: handlers (api, gateway) → app → sagas and datastore → clients,
// with the domain model and the wire conversions below all of them.
var forbidden = map[string][]string{
	// nexus
	"nexus/datastore":  {"nexus/app", "nexus/api", "nexus/gateway", "nexus/sagas", "nexus/sledclient", "pkg/api/"},
	"nexus/api":        {"nexus/gateway", "nexus/datastore", "nexus/sagas", "nexus/sledclient"},
	"nexus/gateway":    {"nexus/api", "nexus/app", "nexus/datastore", "nexus/sagas", "nexus/model"},
	"nexus/app":        {"nexus/api", "nexus/gateway"},
	"nexus/sagas":      {"nexus/app", "nexus/api", "nexus/gateway"},
	"nexus/sledclient": {"nexus/datastore", "nexus/app", "nexus/sagas", "nexus/api"},
	"nexus/model":      {"services/", "pkg/"},
	"nexus/wire":       {"nexus/datastore", "nexus/app", "nexus/sagas", "nexus/api", "nexus/sledclient"},
	"nexus/saga":       {"nexus/"},
	"nexus/racksetup":  {"nexus/app", "nexus/api", "nexus/gateway", "nexus/sagas"},
	// sled-agent
	"sledagent/api":         {"sledagent/nexusclient"},
	"sledagent/vmm":         {"pkg/api/", "sledagent/api", "sledagent/app", "sledagent/nexusclient"},
	"sledagent/reconciler":  {"pkg/api/", "sledagent/api", "sledagent/app"},
	"sledagent/nexusclient": {"sledagent/api", "sledagent/app"},
	"sledagent/wire":        {"sledagent/api", "sledagent/app", "sledagent/nexusclient"},
}

// resolve turns a rule's path into a full import path prefix: "pkg/…" is
// under the module, anything else under services/.
func resolve(p string) string {
	if strings.HasPrefix(p, "pkg/") || strings.HasPrefix(p, "services/") {
		return module + p
	}
	return module + "services/" + p
}

func TestLayersRunOneWay(t *testing.T) {
	checked := 0
	err := filepath.WalkDir(".", func(dir string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		pkg, err := build.ImportDir(dir, 0)
		if err != nil {
			return nil // no Go files here
		}
		rules, ok := forbidden[filepath.ToSlash(dir)]
		if !ok {
			return nil
		}
		checked++
		for _, imp := range pkg.Imports {
			for _, rule := range rules {
				if p := strings.TrimSuffix(resolve(rule), "/"); imp == p || strings.HasPrefix(imp, p+"/") {
					t.Errorf("services/%s imports %s (at %v): it must not import %s", dir, imp, pkg.ImportPos[imp], rule)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked != len(forbidden) {
		t.Fatalf("checked %d packages, the rules name %d: a rule names a package that does not exist", checked, len(forbidden))
	}
}
