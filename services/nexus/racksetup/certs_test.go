package racksetup_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/services/nexus/racksetup"
)

// S1: rack-certs issues, from the plan, each sled its identity, each nexus
// zone its own in its sled's directory, and the operator one; keys are the
// owner's alone; a second run keeps all of them, so that a restarted rack
// presents the same identities, and a new sled in the plan gets one.
func TestS1_RackCertsIssuesEachIdentityOfThePlanOnce(t *testing.T) {
	plan, err := racksetup.LoadPlan(filepath.Join("..", "..", "..", "deploy", "config", "rack-plan-compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	certs := racksetup.Certificates{Dir: t.TempDir()}
	issued, err := certs.Issue(plan, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + 2*len(plan.Sleds); len(issued) != want {
		t.Fatalf("issued %v, want %d identities (operator, each sled, each nexus zone)", issued, want)
	}
	for _, s := range plan.Sleds {
		dirs := map[string]rackpki.Identity{certs.SledDir(s.ID): {Kind: rackpki.Sled, ID: s.ID}}
		for _, z := range s.Zones {
			dirs[rackpki.ZoneDir(certs.SledDir(s.ID), z.ID)] = rackpki.Identity{Kind: rackpki.Nexus, ID: z.ID}
		}
		for dir, want := range dirs {
			trust, err := rackpki.LoadDir(dir)
			if err != nil || trust.Identity != want {
				t.Errorf("%s names %v (%v), want %s", dir, trust.Identity, err, want)
			}
			if info, err := os.Stat(filepath.Join(dir, rackpki.KeyFile)); err != nil || info.Mode().Perm() != 0o600 {
				t.Errorf("%s's key: %v, %v; want mode 0600", dir, info.Mode(), err)
			}
		}
	}
	if info, err := os.Stat(filepath.Join(certs.CADir(), "ca.key")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("the CA's key: %v; want mode 0600", err)
	}
	before, err := os.ReadFile(filepath.Join(certs.SledDir(plan.Sleds[0].ID), rackpki.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	plan.Sleds = append(plan.Sleds, racksetup.Sled{ID: "1a5ec004-0000-4000-8000-000000000001", Address: "sled-agent-4:12345"})
	again, err := certs.Issue(plan, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if want := []rackpki.Identity{{Kind: rackpki.Sled, ID: "1a5ec004-0000-4000-8000-000000000001"}}; !slices.Equal(again, want) {
		t.Fatalf("the second run issued %v, want only %v", again, want)
	}
	after, _ := os.ReadFile(filepath.Join(certs.SledDir(plan.Sleds[0].ID), rackpki.CertFile))
	if string(after) != string(before) {
		t.Fatalf("the second run replaced a sled's certificate")
	}
}
