package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/rackplane/rackplane/services/racktest"
)

// caller is a token and the name the API knows its holder by.
type caller struct{ token, name string }

func newCaller(t *testing.T, r racktest.Rack) caller {
	t.Helper()
	token := r.Token(racktest.FleetAdmin)
	var me struct {
		DisplayName string `json:"display_name"`
	}
	if err := racktest.NewClient(r.Nexus(0).ExternalURL(), token).MustCall(t, http.MethodGet, "/v1/me", "", http.StatusOK).JSON(&me); err != nil {
		t.Fatal(err)
	}
	return caller{token: token, name: me.DisplayName}
}

// whoami is the name of the caller rackctl called as.
func (c cli) whoami(args ...string) string {
	c.t.Helper()
	var me struct {
		DisplayName string `json:"display_name"`
	}
	c.json(&me, append([]string{"whoami"}, args...)...)
	return me.DisplayName
}

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A dead URL: nothing listens on port 1 of loopback.
const deadURL = "http://127.0.0.1:1"

// The API's URL and token come from the flags, else the environment, else
// the config file; the config file is --config, else RACKPLANE_CONFIG, else
// the user's config directory.
func TestRackctlTakesFlagsOverTheEnvironmentOverTheConfigFile(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{})
	url := r.Nexus(0).ExternalURL()
	fromFile, fromEnv, fromFlag := newCaller(t, r), newCaller(t, r), newCaller(t, r)
	rackctl := newCLI(t)
	file := writeFile(t, filepath.Join(t.TempDir(), "rackctl.yaml"), "url: "+url+"\ntoken: "+fromFile.token+"\n")

	if got := rackctl.whoami("--config", file); got != fromFile.name {
		t.Fatalf("with the file alone: called as %s, want %s", got, fromFile.name)
	}
	withEnv := rackctl.with("RACKPLANE_CONFIG="+file, "RACKPLANE_TOKEN="+fromEnv.token)
	if got := withEnv.whoami(); got != fromEnv.name {
		t.Fatalf("RACKPLANE_TOKEN over the file's token: called as %s, want %s", got, fromEnv.name)
	}
	if got := withEnv.whoami("--token", fromFlag.token); got != fromFlag.name {
		t.Fatalf("--token over RACKPLANE_TOKEN: called as %s, want %s", got, fromFlag.name)
	}

	// The URL likewise: a dead one below a live one is never tried.
	deadFile := writeFile(t, filepath.Join(t.TempDir(), "dead.yaml"), "url: "+deadURL+"\ntoken: "+fromFile.token+"\n")
	if msg := rackctl.fails("whoami", "--config", deadFile); !strings.Contains(msg, "cannot reach the API at "+deadURL) {
		t.Fatalf("a dead URL: %q", msg)
	}
	if got := rackctl.with("RACKPLANE_URL="+url).whoami("--config", deadFile); got != fromFile.name {
		t.Fatalf("RACKPLANE_URL over the file's URL: called as %s", got)
	}
	if got := rackctl.with("RACKPLANE_URL="+deadURL).whoami("--config", file, "--url", url); got != fromFile.name {
		t.Fatalf("--url over RACKPLANE_URL: called as %s", got)
	}

	// Which file: --config over RACKPLANE_CONFIG over the config directory.
	writeFile(t, filepath.Join(rackctl.home(), "config", "rackctl", "config.yaml"), "url: "+url+"\ntoken: "+fromEnv.token+"\n")
	if got := rackctl.whoami(); got != fromEnv.name {
		t.Fatalf("the default file ($XDG_CONFIG_HOME/rackctl/config.yaml): called as %s, want %s", got, fromEnv.name)
	}
	if got := rackctl.with("RACKPLANE_CONFIG=" + file).whoami(); got != fromFile.name {
		t.Fatalf("RACKPLANE_CONFIG over the default file: called as %s, want %s", got, fromFile.name)
	}
	if got := rackctl.with("RACKPLANE_CONFIG="+deadFile).whoami("--config", file); got != fromFile.name {
		t.Fatalf("--config over RACKPLANE_CONFIG: called as %s, want %s", got, fromFile.name)
	}

	// What is missing or wrong is said, naming where to give it.
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	for _, c := range []struct {
		rackctl cli
		args    []string
		want    string
	}{
		{newCLI(t), nil, "no API URL: give --url, set RACKPLANE_URL, or run `rackctl login`"},
		{newCLI(t), []string{"--url", url}, "no token: give --token, set RACKPLANE_TOKEN, or run `rackctl login`"},
		{newCLI(t), []string{"--url", "127.0.0.1:12220", "--token", "x"}, `url "127.0.0.1:12220": want http://HOST:PORT`},
		{rackctl, []string{"--config", missing}, "config file: stat " + missing + ": no such file or directory"},
		{rackctl, []string{"--config", writeFile(t, filepath.Join(t.TempDir(), "typo.yaml"), "ur1: "+url+"\n")}, "ur1"},
	} {
		if msg := c.rackctl.fails(append([]string{"whoami"}, c.args...)...); !strings.Contains(msg, c.want) {
			t.Errorf("whoami %v: %q, want %q", c.args, msg, c.want)
		}
	}
}

func (c cli) home() string {
	for _, kv := range c.env {
		if home, ok := strings.CutPrefix(kv, "HOME="); ok {
			return home
		}
	}
	c.t.Fatal("no HOME in rackctl's environment")
	return ""
}

// N10: login checks the URL and token with GET /v1/me before it keeps
// them, in a file only its owner may read; a token the API refuses is
// shown with the API's error and written nowhere.
func TestN10_LoginKeepsOnlyATokenTheAPIAcceptsInAFileOnlyItsOwnerReads(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{})
	url := r.Nexus(0).ExternalURL()
	admin := newCaller(t, r)
	rackctl := newCLI(t)
	file := filepath.Join(rackctl.home(), "config", "rackctl", "config.yaml")

	msg := rackctl.fails("login", "--url", url, "--token", "not-a-token")
	if !strings.HasPrefix(msg, "rackctl: Unauthorized: ") || !strings.Contains(msg, "(HTTP 401, request ") {
		t.Fatalf("login with a bad token: %q, want the API's Unauthorized", msg)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("a refused login wrote %s (%v)", file, err)
	}

	out := rackctl.must("login", "--url", url, "--token", admin.token).stdout
	if want := "logged in to " + url + " as " + admin.name + "; wrote " + file + "\n"; out != want {
		t.Fatalf("login printed %q, want %q", out, want)
	}
	info, err := os.Stat(file)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("the config file: %v, %v; want mode 0600", info, err)
	}
	var kept config
	data, _ := os.ReadFile(file)
	if err := yaml.Unmarshal(data, &kept); err != nil || kept != (config{URL: url, Token: admin.token}) {
		t.Fatalf("the config file holds %q (%v)", data, err)
	}
	if got := rackctl.whoami(); got != admin.name {
		t.Fatalf("after login: called as %s, want %s", got, admin.name)
	}

	// --config names the file login writes, even before it exists.
	other := filepath.Join(t.TempDir(), "new", "rackctl.yaml")
	rackctl.must("login", "--url", url, "--token", admin.token, "--config", other)
	if info, err := os.Stat(other); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("login --config %s: %v, %v", other, info, err)
	}
}
