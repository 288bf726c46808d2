package settings

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/rackplane/rackplane/pkg/duration"
)

type testConfig struct {
	Listen  string            `koanf:"listen_address" flag:"listen" help:"where"`
	Dirs    []string          `koanf:"dirs" flag:"dir"`
	Count   uint32            `koanf:"count"`
	Period  duration.Duration `koanf:"period"`
	Verbose bool              `koanf:"verbose"`
	Hidden  string            `koanf:"hidden" flag:"-"`
	Cmds    map[string]string `koanf:"commands" flag:"command"`
}

func load(t *testing.T, file string, env []string, args ...string) (testConfig, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	l := Bind(fs, Spec{EnvPrefix: "TEST_", Environ: func() []string { return env },
		RelativeToFile: func(func(string) string) []string { return []string{"dirs"} }},
		testConfig{Listen: "127.0.0.1:1", Count: 2, Period: duration.Duration(time.Second)})
	if file != "" {
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return l.Load()
}

func TestEachLayerOverridesTheOneBefore(t *testing.T) {
	cfg, err := load(t, "listen_address: 127.0.0.1:2\ncount: 3\nperiod: 250ms\ndirs: [a, /abs]\nhidden: h\n",
		[]string{"TEST_COUNT=4", "TEST_VERBOSE=true", "TEST_UNRELATED=x", "OTHER_COUNT=9"}, "--listen", "127.0.0.1:3")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:3" || cfg.Count != 4 || !cfg.Verbose || time.Duration(cfg.Period) != 250*time.Millisecond ||
		cfg.Hidden != "h" {
		t.Fatalf("layers: %+v", cfg)
	}
	if len(cfg.Dirs) != 2 || !filepath.IsAbs(cfg.Dirs[0]) || filepath.Base(cfg.Dirs[0]) != "a" || cfg.Dirs[1] != "/abs" {
		t.Fatalf("paths in the file are relative to it: %v", cfg.Dirs)
	}
}

func TestDefaultsStandWhereNothingIsGiven(t *testing.T) {
	cfg, err := load(t, "", nil)
	if err != nil || cfg.Listen != "127.0.0.1:1" || cfg.Count != 2 || time.Duration(cfg.Period) != time.Second {
		t.Fatalf("%+v, %v", cfg, err)
	}
}

func TestListsComeFromRepeatedFlagsOrCommasInTheEnvironment(t *testing.T) {
	cfg, err := load(t, "", []string{"TEST_DIRS=x, y"})
	if err != nil || strings.Join(cfg.Dirs, " ") != "x y" {
		t.Fatalf("from the environment: %v, %v", cfg.Dirs, err)
	}
	cfg, err = load(t, "dirs: [f]\n", []string{"TEST_DIRS=x"}, "--dir", "p", "--dir", "q,r")
	if err != nil || strings.Join(cfg.Dirs, " ") != "p q r" {
		t.Fatalf("from flags: %v, %v", cfg.Dirs, err)
	}
}

func TestAMisspeltKeyInTheFileIsRefused(t *testing.T) {
	if _, err := load(t, "lisen_address: x\n", nil); err == nil || !strings.Contains(err.Error(), "lisen_address") {
		t.Fatalf("misspelt key: %v", err)
	}
}

func TestABadValueNamesItsSetting(t *testing.T) {
	if _, err := load(t, "", []string{"TEST_PERIOD=soon"}); err == nil || !strings.Contains(err.Error(), "period") {
		t.Fatalf("bad duration: %v", err)
	}
}

func TestArgsGiveTheSameSettingsBack(t *testing.T) {
	want := testConfig{Listen: "127.0.0.1:9", Dirs: []string{"/a", "/b"}, Count: 7,
		Period: duration.Duration(1500 * time.Millisecond), Verbose: true}
	defaults := testConfig{Listen: "127.0.0.1:1", Count: 2, Period: duration.Duration(time.Second)}
	args := Args(want, defaults)
	got, err := load(t, "", nil, args...)
	if err != nil || got.Listen != want.Listen || strings.Join(got.Dirs, ",") != "/a,/b" || got.Count != 7 ||
		got.Period != want.Period || !got.Verbose {
		t.Fatalf("%v gave %+v (%v)", args, got, err)
	}
	if len(Args(defaults, defaults)) != 0 {
		t.Fatalf("defaults need no flags, got %v", Args(defaults, defaults))
	}
}

func TestMapsComeFromTheFileTheEnvironmentOrKeyValueFlags(t *testing.T) {
	cfg, err := load(t, "commands: {nexus: /bin/nexus, dns: /bin/dns}\n", nil)
	if err != nil || cfg.Cmds["nexus"] != "/bin/nexus" || cfg.Cmds["dns"] != "/bin/dns" {
		t.Fatalf("from the file: %v, %v", cfg.Cmds, err)
	}
	cfg, err = load(t, "", []string{"TEST_COMMANDS=nexus=/env/nexus,dns=/env/dns"})
	if err != nil || cfg.Cmds["nexus"] != "/env/nexus" || len(cfg.Cmds) != 2 {
		t.Fatalf("from the environment: %v, %v", cfg.Cmds, err)
	}
	cfg, err = load(t, "commands: {dns: /bin/dns}\n", nil, "--command", "nexus=/flag/nexus")
	if err != nil || cfg.Cmds["nexus"] != "/flag/nexus" || len(cfg.Cmds) != 1 {
		t.Fatalf("a flag replaces the map: %v, %v", cfg.Cmds, err)
	}
	want := testConfig{Listen: "127.0.0.1:1", Count: 2, Period: duration.Duration(time.Second),
		Cmds: map[string]string{"a": "/x", "b": "/y"}}
	got, err := load(t, "", nil, Args(want, testConfig{Listen: "127.0.0.1:1", Count: 2, Period: duration.Duration(time.Second)})...)
	if err != nil || len(got.Cmds) != 2 || got.Cmds["b"] != "/y" {
		t.Fatalf("Args of a map: %v, %v", got.Cmds, err)
	}
}
