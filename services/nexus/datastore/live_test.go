package datastore

import (
	"regexp"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/services/nexus/model"
)

// N14: liveVMM lists every VMM state that has not ended, and no other, and
// the live-VMM partial indexes say the same, word for word: a state added
// to vmm's CHECK and left out here would hide its VMMs from placement
// (overcommitting sleds) and from the instance watcher.
func TestN14_LiveVMMStatesAreTheStatesNotEnded(t *testing.T) {
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	check := regexp.MustCompile(`(?s)CREATE TABLE vmm \(.*?state\s+TEXT NOT NULL CHECK \(state IN \(([^)]*)\)\)`).
		FindStringSubmatch(all[0].sql)
	if check == nil {
		t.Fatal("no CHECK of vmm's states in migration 0001")
	}
	states := regexp.MustCompile(`'([a-z_]+)'`).FindAllStringSubmatch(check[1], -1)
	if len(states) == 0 {
		t.Fatal("no states in vmm's CHECK")
	}
	for _, st := range states {
		if listed, ended := strings.Contains(liveVMM, "'"+st[1]+"'"), model.VMMState(st[1]).Terminal(); listed == ended {
			t.Errorf("state %s: listed as live %v, ended %v", st[1], listed, ended)
		}
	}
	predicate := "WHERE " + strings.ReplaceAll(liveVMM, "m.", "") + ";"
	var indexes int
	for _, m := range all {
		for _, stmt := range splitStatements(m.sql) {
			if strings.Contains(stmt, "INDEX vmm_live_") {
				indexes++
				if !strings.HasSuffix(strings.Join(strings.Fields(stmt), " ")+";", predicate) {
					t.Errorf("%s\ndoes not end with %s", stmt, predicate)
				}
			}
		}
	}
	if indexes != 2 {
		t.Errorf("%d live-VMM indexes, want 2", indexes)
	}
}
