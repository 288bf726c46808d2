package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/dirlock"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/racksetup"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
	"github.com/rackplane/rackplane/services/sledagent/zoneruntime/process"
)

// markerFile tells a state directory this launcher made from any other
// directory, so that --fresh never wipes one it did not make.
const markerFile = ".rackplane-localcluster"

func sledName(i int) string { return fmt.Sprintf("sled-agent-%d", i+1) }

// identity is who the cluster is: made up when its state directory is
// new, and kept there, so that a restart presents the same rack, sleds and
// replicas (the rack's records match, and each sled adopts the zones it
// left running), while two clusters on one machine never share an id.
type identity struct {
	// Mode is "sqlite" or "postgres": a state directory serves one.
	Mode     string      `json:"mode"`
	Rack     uuid.UUID   `json:"rack"`
	Sleds    []uuid.UUID `json:"sleds"`
	Replicas []uuid.UUID `json:"replicas"`
}

const identityFile = "identity.json"

// loadIdentity reads the identity of the cluster in dir, or makes up one
// of the given shape and keeps it there. A state directory made for the
// other mode is refused.
func loadIdentity(dir, mode string, sleds, replicas int) (identity, error) {
	path := filepath.Join(dir, identityFile)
	var id identity
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &id); err != nil {
			return id, fmt.Errorf("%s: %w; start with --fresh", path, err)
		}
		if id.Mode != mode || len(id.Sleds) != sleds || len(id.Replicas) != replicas {
			return id, fmt.Errorf("%s holds a %s cluster of %d sleds; start it as one, or with --fresh", dir, id.Mode, len(id.Sleds))
		}
		return id, nil
	case !errors.Is(err, os.ErrNotExist):
		return id, err
	}
	id = identity{Mode: mode, Rack: uuid.New()}
	for range sleds {
		id.Sleds = append(id.Sleds, uuid.New())
	}
	for range replicas {
		id.Replicas = append(id.Replicas, uuid.New())
	}
	data, err = json.MarshalIndent(id, "", "  ")
	if err != nil {
		return id, err
	}
	return id, os.WriteFile(path, append(data, '\n'), 0o644)
}

func (l layout) sledID(i int) string     { return l.ids.Sleds[i].String() }
func (l layout) nexusID(k int) uuid.UUID { return l.ids.Replicas[k] }

// zpools gives each sled two pools whose names say which sled they are on.
func zpools(i int) []string {
	return []string{
		fmt.Sprintf("oxp_0b0e0000-0000-4000-8000-0000000c%02d01", i+1),
		fmt.Sprintf("oxp_0b0e0000-0000-4000-8000-0000000c%02d02", i+1),
	}
}

// layout is one cluster: where everything lives, and its shape.
type layout struct {
	repo string // the module root, where the binaries are built from
	dir  string // the state directory, absolute, symbolic links resolved
	lock *dirlock.Lock
	ids  identity
	// sleds and replicas are the cluster's shape: with SQLite two sleds
	// and one replica (a zone of sled 1); with PostgreSQL three of each,
	// one replica a sled.
	sleds, replicas int
	// database is where the replicas keep the rack's state.
	database racksetup.Database
	apiPort  int
	metrics  int
}

func (l layout) bin(name string) string { return filepath.Join(l.dir, "bin", name) }

// pki is where the rack's certificates live: its CA, each sled's and
// nexus zone's identity, and the operator's (sledctl --tls-dir).
func (l layout) pki() racksetup.Certificates {
	return racksetup.Certificates{Dir: filepath.Join(l.dir, "pki")}
}
func (l layout) logDir() string       { return filepath.Join(l.dir, "logs") }
func (l layout) sledDir(i int) string { return filepath.Join(l.dir, fmt.Sprintf("sled-%d", i+1)) }

// zoneRoot is where sled i's process zones live (its nexus zone's log).
func (l layout) zoneRoot(i int) string { return filepath.Join(l.sledDir(i), "pools") }

func (l layout) sledIDs() []string {
	ids := make([]string, l.sleds)
	for i := range ids {
		ids[i] = l.sledID(i)
	}
	return ids
}

// replica k listens at the ports the flags gave, shifted by ten per
// replica: API 12220, internal API 12221, metrics 12223 for the first.
func (l layout) apiURL(k int) string   { return fmt.Sprintf("http://127.0.0.1:%d", l.apiPort+10*k) }
func (l layout) internal(k int) string { return fmt.Sprintf("127.0.0.1:%d", l.apiPort+10*k+1) }
func (l layout) metricsURL(k int) string {
	return fmt.Sprintf("http://127.0.0.1:%d/metrics", l.metrics+10*k)
}

func (l layout) internalAddrs() []string {
	out := make([]string, l.replicas)
	for k := range out {
		out[k] = l.internal(k)
	}
	return out
}

// sledConfig is sled i's agent: its own directory, the replicas' internal
// addresses, and nexus zones run as processes of the built nexus.
func (l layout) sledConfig(i int, listen string) sledconfig.Config {
	c := sledconfig.Default()
	c.SledID, c.DataDir, c.ListenAddress = l.sledID(i), l.sledDir(i), listen
	c.TLSDir = l.pki().SledDir(l.sledID(i))
	// A simulated rack: the seed scenarios need their faults (V7).
	c.FaultInjection = true
	c.Zpools = zpools(i)
	c.NexusAddress = l.internalAddrs()
	c.ZoneCommands = map[string]string{"nexus": l.bin("nexus")}
	c.LogFormat = "console"
	return c
}

// plan is the rack the launcher sets up: replica k a nexus zone of sled
// k, on the sled's first pool, with the database of the plan.
func (l layout) plan(sledAddrs []string) racksetup.Plan {
	p := racksetup.Plan{Rack: l.ids.Rack.String(), Database: l.database}
	for i := range l.sleds {
		s := racksetup.Sled{ID: l.sledID(i), Address: sledAddrs[i]}
		if i < l.replicas {
			s.Zones = append(s.Zones, racksetup.Zone{ID: l.nexusID(i).String(), Kind: model.ZoneNexus, Pool: zpools(i)[0],
				Address: l.internal(i), Nexus: &racksetup.NexusListeners{
					ExternalAddress: strings.TrimPrefix(l.apiURL(i), "http://"),
					MetricsAddress:  strings.TrimSuffix(strings.TrimPrefix(l.metricsURL(i), "http://"), "/metrics")}})
		}
		p.Sleds = append(p.Sleds, s)
	}
	return p
}

// moduleRoot asks the go command, so the launcher works from any directory
// inside the repository, as `go run` allows.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run this from inside the rackplane repository (no go.mod found)")
	}
	root := filepath.Dir(gomod)
	if _, err := os.Stat(filepath.Join(root, "services", "nexus", "cmd", "nexus")); err != nil {
		return "", fmt.Errorf("%s is not the rackplane repository: %w", root, err)
	}
	return root, nil
}

// claimStateDir makes dir this run's: it must be new, empty or one this
// launcher made (a mistyped --dir must not take over or erase someone's
// directory), and no other launcher may be using it. With fresh it is
// emptied first, after stopping the zones an earlier run left running
// (a launcher killed with SIGKILL leaves its nexus zones behind).
func claimStateDir(dir string, fresh bool, stdout io.Writer) (*dirlock.Lock, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s is not a cluster state directory (no %s); choose another --dir", dir, markerFile)
	}
	lock, err := dirlock.Acquire("local cluster", dir)
	if err != nil {
		return nil, err
	}
	if !fresh {
		return lock, nil
	}
	roots, _ := filepath.Glob(filepath.Join(dir, "sled-*", "pools"))
	for _, root := range roots {
		if pids, _ := process.StopAll(root, 10*time.Second); len(pids) > 0 {
			fmt.Fprintf(stdout, "stopped zone processes %v left by an earlier run\n", pids)
		}
	}
	for _, e := range entries {
		if e.Name() == dirlock.FileName {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			lock.Release()
			return nil, err
		}
	}
	return lock, nil
}

func makeStateDir(dir string, stdout io.Writer) error {
	_, err := os.Stat(filepath.Join(dir, markerFile))
	if err == nil {
		fmt.Fprintf(stdout, "reusing the cluster state in %s (--fresh starts over)\n", dir)
	} else {
		fmt.Fprintf(stdout, "new cluster state in %s\n", dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, markerFile), []byte("state of deploy/localcluster\n"), 0o644)
}

func (l layout) build(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(l.dir, "bin")+string(filepath.Separator),
		"./services/nexus/cmd/nexus", "./services/sledagent/cmd/sled-agent", "./services/nexus/cmd/rackctl")
	cmd.Dir = l.repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// mintToken runs `nexus token create` against the rack's database, as an
// operator would, once rack setup has created it.
func (l layout) mintToken(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, l.bin("nexus"), "token", "create", "--id", l.nexusID(0).String(),
		"--database-backend", l.database.Backend, "--database-url", l.database.URL,
		"--principal", "localcluster", "--fleet-admin")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("nexus token create: %w\n%s", err, stderr.String())
	}
	token := strings.TrimSpace(string(out))
	if token == "" {
		return "", errors.New("nexus token create printed no token")
	}
	return token, nil
}
