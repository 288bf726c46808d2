package main

import (
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/services/racktest"
)

// createdToken is rackctl's JSON of a new token.
type createdToken struct {
	ID          string    `json:"id"`
	Token       string    `json:"token"`
	Principal   string    `json:"principal"`
	TimeExpires time.Time `json:"time_expires"`
}

// listedToken is an item of a token listing.
type listedToken struct {
	ID        string `json:"id"`
	Principal string `json:"principal"`
}

func (c cli) tokens(args ...string) []listedToken {
	c.t.Helper()
	var list struct {
		Items []listedToken `json:"items"`
	}
	c.json(&list, append([]string{"token", "list"}, args...)...)
	return list.Items
}

func holds(tokens []listedToken, id, principal string) bool {
	for _, tok := range tokens {
		if tok.ID == id && tok.Principal == principal {
			return true
		}
	}
	return false
}

// N10, N15: a fleet admin mints a token for a principal with its roles;
// its holder sees who it is and its own tokens, the admin sees everyone's;
// a revoked token is refused at once, whoever revoked it.
func TestN10_RackctlMintsListsAndRevokesTokens(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{})
	admin := asAdmin(t, r)
	admin.must("project", "create", "demo")

	var carol createdToken
	admin.json(&carol, "token", "create", "--principal", "carol", "--role", "viewer:demo", "--expires-in", "1h")
	if carol.Principal != "carol" || carol.Token == "" || carol.ID == "" ||
		time.Until(carol.TimeExpires) < 59*time.Minute || time.Until(carol.TimeExpires) > time.Hour+time.Second {
		t.Fatalf("token create -o json: %+v, want carol's token expiring in an hour", carol)
	}
	asCarol := admin.with("RACKPLANE_TOKEN=" + carol.Token)
	if got := asCarol.whoami(); got != "carol" {
		t.Fatalf("whoami with carol's token: %s", got)
	}
	rows := wantHeader(t, asCarol.must("whoami").stdout, "NAME", "ID", "SILO", "FLEET-VIEWER", "SILO-ADMIN")
	if len(rows) != 1 || rows[0][0] != "carol" || rows[0][3] != "false" {
		t.Fatalf("whoami table: %v, want carol, no fleet viewer", rows)
	}
	// Her role is what the admin granted: she reads the project, and may
	// not change it.
	asCarol.must("project", "view", "demo")
	if msg := asCarol.fails("instance", "create", "demo/web"); !strings.HasPrefix(msg, "rackctl: Forbidden: ") {
		t.Fatalf("a viewer creating an instance: %q", msg)
	}

	if own := asCarol.tokens(); len(own) != 1 || own[0].ID != carol.ID {
		t.Fatalf("carol's own tokens: %+v, want hers alone", own)
	}
	rows = wantHeader(t, admin.must("token", "list", "--all").stdout, "ID", "PRINCIPAL", "CREATED", "EXPIRES")
	if !holds(admin.tokens("--all"), carol.ID, "carol") || len(rows) < 2 {
		t.Fatalf("every principal's tokens lack carol's: %v", rows)
	}
	if msg := asCarol.fails("token", "list", "--all"); !strings.HasPrefix(msg, "rackctl: Forbidden: ") {
		t.Fatalf("a viewer listing every token: %q", msg)
	}

	// The admin revokes carol's token; it is refused from then on.
	if out := admin.must("token", "revoke", carol.ID, "--all").stdout; out != "revoked token "+carol.ID+"\n" {
		t.Fatalf("token revoke --all printed %q", out)
	}
	if msg := asCarol.fails("whoami"); !strings.HasPrefix(msg, "rackctl: Unauthorized: ") {
		t.Fatalf("whoami with a revoked token: %q", msg)
	}
	if holds(admin.tokens("--all"), carol.ID, "carol") {
		t.Fatal("a revoked token is still listed")
	}

	// A holder revokes a token of her own.
	var dave createdToken
	admin.must("project", "create", "other")
	admin.json(&dave, "token", "create", "--principal", "dave", "--role", "collaborator:demo", "--role", "viewer:other")
	asDave := admin.with("RACKPLANE_TOKEN=" + dave.Token)
	if !dave.TimeExpires.IsZero() {
		t.Fatalf("a token without --expires-in expires at %s", dave.TimeExpires)
	}
	asDave.must("instance", "create", "demo/web")
	asDave.must("project", "view", "other")
	if msg := asDave.fails("instance", "create", "other/web"); !strings.HasPrefix(msg, "rackctl: Forbidden: ") {
		t.Fatalf("a viewer of other creating an instance there: %q", msg)
	}
	asDave.must("token", "revoke", dave.ID)
	if msg := asDave.fails("whoami"); !strings.HasPrefix(msg, "rackctl: Unauthorized: ") {
		t.Fatalf("whoami with a token revoked by its holder: %q", msg)
	}
}
