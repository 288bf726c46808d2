package racktest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rackplane/rackplane/pkg/testutil"
)

// Binaries of the product, by import path.
const (
	NexusBinary     = "github.com/rackplane/rackplane/services/nexus/cmd/nexus"
	SledAgentBinary = "github.com/rackplane/rackplane/services/sledagent/cmd/sled-agent"
)

var builds = struct {
	sync.Mutex
	dir  string
	once map[string]*build
}{once: map[string]*build{}}

type build struct {
	once sync.Once
	path string
	err  error
}

// Build builds the command at importPath once per test process (without
// -race: processes under test are the binaries as shipped) and returns the
// binary's path. Main removes it.
func Build(t testutil.TB, importPath string) string {
	t.Helper()
	builds.Lock()
	b := builds.once[importPath]
	if b == nil {
		b = &build{}
		builds.once[importPath] = b
	}
	builds.Unlock()
	b.once.Do(func() { b.path, b.err = goBuild(importPath) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func goBuild(importPath string) (string, error) {
	builds.Lock()
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "racktest-bin-")
		if err != nil {
			builds.Unlock()
			return "", err
		}
		builds.dir = dir
	}
	dir := builds.dir
	builds.Unlock()
	path := filepath.Join(dir, filepath.Base(importPath))
	if out, err := exec.Command("go", "build", "-o", path, importPath).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", importPath, err, strings.TrimSpace(string(out)))
	}
	return path, nil
}

func removeBuilds() {
	builds.Lock()
	defer builds.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
}
