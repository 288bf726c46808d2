package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/rackplane/rackplane/pkg/settings"
)

// config is where the API is and who calls it: from flags, else the
// environment (RACKPLANE_URL, RACKPLANE_TOKEN), else the config file.
type config struct {
	URL   string `koanf:"url" json:"url" help:"the API's base URL, e.g. http://127.0.0.1:12220 (default $RACKPLANE_URL, else the config file's)"`
	Token string `koanf:"token" json:"token" help:"bearer token (default $RACKPLANE_TOKEN, else the config file's)"`
}

// configEnv names the config file in the environment, below --config.
const configEnv = "RACKPLANE_CONFIG"

// session is what every command shares: the global flags, and the way to
// the API they describe.
type session struct {
	flags  *pflag.FlagSet
	loader *settings.Loader[config]
	output string
}

func bindSession(root *cobra.Command) *session {
	fs := root.PersistentFlags()
	s := &session{flags: fs, loader: settings.Bind(fs, settings.Spec{EnvPrefix: "RACKPLANE_"}, config{})}
	fs.Lookup("config").Usage = "config `FILE` with url and token, as rackctl login writes it (default $" + configEnv +
		", else $XDG_CONFIG_HOME/rackctl/config.yaml or ~/.config/rackctl/config.yaml)"
	fs.StringVarP(&s.output, "output", "o", "table", "output format: table or json (the API's own objects)")
	return s
}

// configFile is the config file to read and the one login writes, and
// whether the user named it: a named file must exist to be read, the
// default one need not.
func (s *session) configFile() (path string, named bool, err error) {
	if f := s.flags.Lookup("config"); f.Changed {
		return f.Value.String(), true, nil
	}
	if p := os.Getenv(configEnv); p != "" {
		return p, true, nil
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", false, fmt.Errorf("no config file: %w; give --config or set %s", err, configEnv)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "rackctl", "config.yaml"), false, nil
}

// load layers flags over the environment over the config file, and
// returns the config file's path too (login writes there). For login, a
// missing file is no error even when named. Once per command: it sets
// --config to the file it reads.
func (s *session) load(forLogin bool) (config, string, error) {
	path, named, err := s.configFile()
	if err != nil {
		return config{}, "", err
	}
	read := path
	_, err = os.Stat(path)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist) && (forLogin || !named):
		read = ""
	default:
		return config{}, "", fmt.Errorf("config file: %w", err)
	}
	if err := s.flags.Set("config", read); err != nil {
		return config{}, "", err
	}
	cfg, err := s.loader.Load()
	if err != nil {
		return config{}, "", err
	}
	return cfg, path, cfg.check()
}

// check says what is missing or malformed, and where to give it.
func (c config) check() error {
	if c.URL == "" {
		return errors.New("no API URL: give --url, set RACKPLANE_URL, or run `rackctl login`")
	}
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url %q: want http://HOST:PORT or https://HOST:PORT", c.URL)
	}
	if c.Token == "" {
		return errors.New("no token: give --token, set RACKPLANE_TOKEN, or run `rackctl login`")
	}
	return nil
}

// client is the API as the configured caller.
func (s *session) client() (*client, error) {
	cfg, _, err := s.load(false)
	if err != nil {
		return nil, err
	}
	return newClient(cfg)
}

// writeConfig writes cfg to path, readable by its owner only (it holds a
// token), replacing the file whole so that a reader never sees half of it.
func writeConfig(path string, cfg config) error {
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600 already; said again because it holds
	// a secret.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func loginCommand(s *session) *cobra.Command {
	return &cobra.Command{
		Use:   "login --url URL --token TOKEN",
		Short: "Check a URL and token with the API (GET /v1/me), then keep them in the config file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, path, err := s.load(true)
			if err != nil {
				return err
			}
			c, err := newClient(cfg)
			if err != nil {
				return err
			}
			me, _, err := c.whoami(cmd.Context())
			if err != nil {
				return err
			}
			if err := writeConfig(path, cfg); err != nil {
				return fmt.Errorf("writing the config file: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "logged in to %s as %s; wrote %s\n", strings.TrimSuffix(cfg.URL, "/"), me.DisplayName, path)
			return nil
		},
	}
}
