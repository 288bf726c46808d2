package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The cluster's identities are fixed, not random: a restart on the same
// state directory must present the same nexus and the same sleds, so that
// nexus recognises them and each sled adopts the zones it left running.
const (
	nexusID   = "4e000000-0000-4000-8000-0000000c0001"
	sledCount = 2
	// markerFile tells a state directory this launcher made from any other
	// directory, so that --fresh never wipes one it did not make.
	markerFile = ".rackplane-localcluster"
)

func sledName(i int) string { return fmt.Sprintf("sled-agent-%d", i+1) }

// sledID differs in its first group, which the simulated baseboard serial
// is made of, so that the sleds are told apart in nexus's listing too.
func sledID(i int) string { return fmt.Sprintf("1a5ec%03d-0000-4000-8000-000000000001", i+1) }

func sledIDs() []string {
	ids := make([]string, sledCount)
	for i := range ids {
		ids[i] = sledID(i)
	}
	return ids
}

// zpools gives each sled two pools whose names say which sled they are on.
func zpools(i int) []string {
	return []string{
		fmt.Sprintf("oxp_0b0e0000-0000-4000-8000-0000000c%02d01", i+1),
		fmt.Sprintf("oxp_0b0e0000-0000-4000-8000-0000000c%02d02", i+1),
	}
}

// layout is where everything of one cluster lives, and the token minted for
// this run.
type layout struct {
	repo  string // the module root, where the binaries are built from
	dir   string // the state directory, absolute
	token string
}

func (l layout) bin(name string) string { return filepath.Join(l.dir, "bin", name) }
func (l layout) logDir() string         { return filepath.Join(l.dir, "logs") }
func (l layout) database() string       { return filepath.Join(l.dir, "nexus", "nexus.db") }
func (l layout) sledDir(i int) string   { return filepath.Join(l.dir, fmt.Sprintf("sled-%d", i+1)) }

// nexusDatabaseArgs are the flags that name nexus and its database; the
// token command needs them too, to find the same database.
func (l layout) nexusDatabaseArgs() []string {
	return []string{"--id", nexusID, "--database-backend", "sqlite", "--database-url", l.database()}
}

func (l layout) nexusArgs(apiPort, metricsPort int, internal string) []string {
	return append(l.nexusDatabaseArgs(),
		"--external-listen", fmt.Sprintf("127.0.0.1:%d", apiPort),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"--internal-listen", internal,
		"--log-format", "console")
}

func (l layout) sledArgs(i int, listen, nexusInternal string) []string {
	args := []string{
		"--sled-id", sledID(i),
		"--data-dir", l.sledDir(i),
		"--listen", listen,
		"--nexus-address", nexusInternal,
		"--log-format", "console",
	}
	for _, z := range zpools(i) {
		args = append(args, "--zpool", z)
	}
	return args
}

// prepare finds the repository, makes (or wipes) the state directory,
// builds the binaries and mints this run's token.
func prepare(ctx context.Context, opts options, stdout io.Writer) (layout, error) {
	var l layout
	var err error
	if l.repo, err = moduleRoot(ctx); err != nil {
		return l, err
	}
	dir := opts.dir
	if dir == "" {
		dir = filepath.Join(l.repo, ".local", "cluster")
	}
	if l.dir, err = filepath.Abs(dir); err != nil {
		return l, err
	}
	if opts.fresh {
		if err := wipe(l.dir); err != nil {
			return l, err
		}
	}
	if err := makeStateDir(l.dir, stdout); err != nil {
		return l, err
	}
	fmt.Fprintf(stdout, "building nexus and sled-agent into %s\n", filepath.Join(l.dir, "bin"))
	if err := l.build(ctx); err != nil {
		return l, err
	}
	if l.token, err = l.mintToken(ctx); err != nil {
		return l, err
	}
	return l, nil
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

// wipe removes a state directory, but only one this launcher made: a
// mistyped --dir must not erase someone's home directory.
func wipe(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil && len(entries) > 0 {
		return fmt.Errorf("--fresh: %s is not a cluster state directory (no %s); not wiping it", dir, markerFile)
	}
	return os.RemoveAll(dir)
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
		"./services/nexus/cmd/nexus", "./services/sledagent/cmd/sled-agent")
	cmd.Dir = l.repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// mintToken runs `nexus token create` against the cluster's database before
// nexus starts, as an operator would; it also creates and migrates the
// database on a first start.
func (l layout) mintToken(ctx context.Context) (string, error) {
	args := append([]string{"token", "create"}, l.nexusDatabaseArgs()...)
	args = append(args, "--principal", "localcluster", "--fleet-admin")
	cmd := exec.CommandContext(ctx, l.bin("nexus"), args...)
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
