package nexus_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"

	"github.com/rackplane/rackplane/pkg/duration"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/config"
	"github.com/rackplane/rackplane/services/racktest"
)

// N15, N3: an update of a stopped instance that lands while a start is
// under way (after the start placed its VMM, before it linked it) must
// either be refused or make that start fail. Otherwise the instance runs
// with the new shape on a sled that reserved the old one, and the sled
// takes more than it has.
func TestN15_AnUpdateDuringAStartNeverRunsAShapeTheSledDidNotReserve(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			block := newBlockAt("link_vmm")
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1,
				NexusOptions: []nexus.Option{block.option()}})
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
			c := admin.SDK(t)
			createInstance(t, c, "demo", "big", false) // 2 vCPUs
			started := make(chan error, 1)
			go func() {
				_, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Project: "demo", Instance: "big"})
				started <- err
			}()
			<-block.reached // placed on the sled with 2 vCPUs reserved, not yet linked
			// The sled offers 64 vCPUs (sled-agent's default).
			_, updateErr := c.InstanceUpdate(ctx, oxide.InstanceUpdateParams{Project: "demo", Instance: "big",
				Body: &oxide.InstanceUpdate{Ncpus: 64, Memory: 4 << 30}})
			close(block.release)
			startErr := <-started
			if updateErr != nil || startErr != nil {
				return // one of the two lost: what the guard promises
			}
			big := waitRunState(t, c, "demo", "big", oxide.InstanceStateRunning)
			if big.Ncpus != 64 {
				t.Fatalf("update and start both succeeded, yet the instance runs %d vCPUs", big.Ncpus)
			}
			// big holds every vCPU of the sled: nothing more fits.
			start := true
			_, err := c.InstanceCreate(ctx, oxide.InstanceCreateParams{Project: "demo", Body: &oxide.InstanceCreate{
				Name: "small", Hostname: "small", Memory: 1 << 30, Ncpus: 1, Start: &start}})
			if err == nil {
				t.Fatalf("the update (64 vCPUs) landed between the start's placement (2 vCPUs) and its link; both succeeded " +
					"and big runs 64 vCPUs, yet another instance was placed on the 64-vCPU sled: it is overcommitted")
			}
			if !errors.Is(err, oxide.ErrHTTP507) {
				t.Fatalf("starting a second instance on a full sled: %v, want 507", err)
			}
		})
	}
}

// SPEC 7, N15: a mint whose second role names a malformed project is
// refused naming that role's field, roles[1].project, as the other mint
// refusals do.
func TestN15_AMintWithABadProjectNamesTheRoleItIsIn(t *testing.T) {
	r := rack(t, racktest.Backends[0], 1)
	admin := r.Client(racktest.FleetAdmin)
	admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
	resp := admin.Call(t, http.MethodPost, "/v1/system/access-tokens",
		`{"principal":"dave","roles":[{"role":"viewer","project":"demo"},{"role":"viewer","project":"Bad_Name"}]}`)
	if resp.Status != http.StatusBadRequest || !strings.Contains(string(resp.Body), "roles[1].project") {
		t.Fatalf("minting with a malformed project in the second role: %d %s, want 400 naming roles[1].project", resp.Status, resp.Body)
	}
}

// SPEC 7: an out-of-range expires_in_seconds is refused naming the field;
// it is not silently cut to a lifetime the caller did not ask for.
func TestN15_AnExpiryBeyondTheLongestLifetimeIsRefusedNotCut(t *testing.T) {
	r := rack(t, racktest.Backends[0], 1)
	admin := r.Client(racktest.FleetAdmin)
	// 1,000 years.
	resp := admin.Call(t, http.MethodPost, "/v1/system/access-tokens",
		`{"principal":"dave","roles":[{"role":"admin"}],"expires_in_seconds":31536000000}`)
	if resp.Status != http.StatusBadRequest || !strings.Contains(string(resp.Body), "expires_in_seconds") {
		t.Fatalf("minting a token for 1,000 years: %d %s, want 400 naming expires_in_seconds", resp.Status, resp.Body)
	}
}

// N15, N10: a token revoked through a replica is refused by that replica
// at once, even while requests with it are in flight. A request that read
// the token before the revocation committed must not put it back into the
// authentication cache after the revocation emptied it: the revoked token
// would then be accepted for authn_cache_ttl (here an hour).
func TestN15_ATokenRevokedWhileItIsInUseIsRefusedAtOnce(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1,
				NexusConfig: func(_ int, c *config.Config) { c.AuthnCacheTTL = duration.Duration(time.Hour) }})
			admin := r.Client(racktest.FleetAdmin)
			admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"demo","description":""}`, http.StatusCreated)
			for round := range 40 {
				resp := admin.MustCall(t, http.MethodPost, "/v1/system/access-tokens",
					fmt.Sprintf(`{"principal":"user-%d","roles":[{"role":"viewer","project":"demo"}]}`, round), http.StatusCreated)
				var minted struct{ ID, Token string }
				if err := json.Unmarshal(resp.Body, &minted); err != nil {
					t.Fatal(err)
				}
				user := racktest.NewClient(r.Nexus(0).ExternalURL(), minted.Token)
				var (
					stop  atomic.Bool
					calls atomic.Int64
					wg    sync.WaitGroup
				)
				for range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for !stop.Load() {
							user.Do(ctx, http.MethodGet, "/v1/projects/demo", "") //nolint:errcheck // load only
							calls.Add(1)
						}
					}()
				}
				// Revoke while the first, uncached, requests are reading the token.
				for calls.Load() < int64(round%4) {
					runtime.Gosched()
				}
				admin.MustCall(t, http.MethodDelete, "/v1/system/access-tokens/"+minted.ID, "", http.StatusNoContent)
				stop.Store(true)
				wg.Wait()
				if resp := user.Call(t, http.MethodGet, "/v1/projects/demo", ""); resp.Status != http.StatusUnauthorized {
					t.Fatalf("round %d: the token revoked through this replica still answers %d after the revocation returned "+
						"(a request in flight put it back into the authentication cache)", round, resp.Status)
				}
			}
		})
	}
}
