package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// waitSleds polls nexus's sled list with the token until every id in want is
// listed (with want empty: until nexus answers 200 at all), until timeout or
// ctx ends. Polling the real API with the real token checks what a person
// will do next: nexus listens, its database works, the token is accepted.
func waitSleds(ctx context.Context, api, token string, want []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		listed, err := listSleds(ctx, api, token)
		if err == nil {
			missing := without(want, listed)
			if len(missing) == 0 {
				return nil
			}
			err = fmt.Errorf("sleds not registered yet: %s", strings.Join(missing, ", "))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last: %v", context.Cause(ctx), err)
		case <-tick.C:
		}
	}
}

// listSleds returns the ids of the sleds nexus knows.
func listSleds(ctx context.Context, api, token string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/v1/system/hardware/sleds?limit=100", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/system/hardware/sleds: %s: %s", resp.Status, body)
	}
	var page struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, err
	}
	ids := make([]string, len(page.Items))
	for i, s := range page.Items {
		ids[i] = s.ID
	}
	return ids, nil
}

func without(want, have []string) []string {
	var missing []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			missing = append(missing, w)
		}
	}
	return missing
}

// sledAddr is what a person needs to reach one sled-agent with sledctl.
type sledAddr struct{ name, id, addr string }

// writeRackctlConfig writes rackctl's config file for this cluster (its
// first REST API and this start's token) into the state directory, for
// its owner only: it holds the token.
func (l layout) writeRackctlConfig(token string) (string, error) {
	path := filepath.Join(l.dir, "rackctl.yaml")
	// Made anew, so that it gets the mode: WriteFile keeps an existing
	// file's.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	data := fmt.Sprintf("url: %q\ntoken: %q\n", l.apiURL(0), token)
	return path, os.WriteFile(path, []byte(data), 0o600)
}

// printReady prints the "ready" line first (what scripts and the test wait
// for), then what a person needs to use the cluster.
func printReady(w io.Writer, l layout, token, rackctlConfig string, sleds []sledAddr, zones []zoneProcess) {
	api, metrics := l.apiURL(0), l.metricsURL(0)
	fmt.Fprintf(w, "ready: url=%s token=%s metrics=%s\n\n", api, token, metrics)
	for k := range l.replicas {
		fmt.Fprintf(w, "  nexus-%d     REST API %s, metrics %s (Prometheus; no token)\n", k+1, l.apiURL(k), l.metricsURL(k))
	}
	fmt.Fprintf(w, "              OpenAPI document at %s/openapi.json\n", api)
	fmt.Fprintf(w, "  database    %s %s\n", l.database.Backend, l.database.URL)
	fmt.Fprintf(w, "  token       %s  (fleet admin; a new one each start)\n", token)
	for _, s := range sleds {
		fmt.Fprintf(w, "  %s  sled %s, gRPC at %s (sledctl --addr %s --tls-dir %s inventory)\n", s.name, s.id, s.addr, s.addr,
			l.pki().OperatorDir())
	}
	for _, z := range zones {
		fmt.Fprintf(w, "  %s     a zone of %s, pid %d, log %s\n", z.name, z.sled, z.pid, z.log)
	}
	fmt.Fprintf(w, "  logs        %s (sled-agent-N.log, rack-setup.log)\n", l.logDir())
	fmt.Fprintf(w, "  rack plan   %s\n\n", filepath.Join(l.dir, "rack-plan.json"))
	fmt.Fprintf(w, "Try:\n")
	fmt.Fprintf(w, "  export RACKPLANE_CONFIG=%s   # rackctl's URL and token for this cluster\n", rackctlConfig)
	fmt.Fprintf(w, "  %s project create demo\n", l.bin("rackctl"))
	fmt.Fprintf(w, "  %s instance create demo/web --ncpus 1 --memory 1GiB --start --wait\n\n", l.bin("rackctl"))
	fmt.Fprintf(w, "  export TOKEN=%s\n", token)
	fmt.Fprintf(w, "  curl -H \"Authorization: Bearer $TOKEN\" %s/v1/system/hardware/sleds\n", api)
	fmt.Fprintf(w, "  curl -H \"Authorization: Bearer $TOKEN\" %s/v1/projects -d '{\"name\": \"demo\", \"description\": \"\"}'\n", api)
	fmt.Fprintf(w, "  curl -H \"Authorization: Bearer $TOKEN\" %s/v1/projects\n\n", api)
	fmt.Fprintln(w, "Ctrl-C stops the cluster.")
}
