package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/sagas"
)

func TestN5_CrashPointFlagParsesEveryStartSagaNodeAndRefusesTheRest(t *testing.T) {
	templates := sagas.Templates(sagas.Deps{})
	for _, tc := range []struct {
		value string
		want  crashPoint
	}{
		{"instance-start/alloc_vmm/before", crashPoint{Template: "instance-start", Node: "alloc_vmm"}},
		{"instance-start/ensure_registered/after", crashPoint{Template: "instance-start", Node: "ensure_registered", After: true}},
		{"instance-update/apply/after", crashPoint{Template: "instance-update", Node: "apply", After: true}},
	} {
		got, err := parseCrashPoint(tc.value, templates)
		if err != nil || got != tc.want {
			t.Errorf("parseCrashPoint(%q) = %+v, %v; want %+v", tc.value, got, err, tc.want)
		}
		if got.String() != tc.value {
			t.Errorf("%+v prints as %q, want %q", got, got.String(), tc.value)
		}
	}
	var names []string
	for _, tmpl := range templates {
		names = append(names, tmpl.Name)
	}
	slices.Sort(names)
	for _, tc := range []struct{ value, mention string }{
		{"", "<template>/<node>/<before|after>"},
		{"instance-start/alloc_vmm", "<template>/<node>/<before|after>"},
		{"instance-start/alloc_vmm/before/x", "<template>/<node>/<before|after>"},
		{"instance-start/alloc_vmm/during", `"during" is not before or after`},
		{"instance-start/alloc_vmm/Before", `"Before" is not before or after`},
		{"instance-start/lock/before", `has no node "lock" (it has alloc_vmm, link_vmm, ensure_registered, ensure_running)`},
		{"instance-stop/alloc_vmm/before", `no saga template "instance-stop" (there are ` + strings.Join(names, ", ") + ")"},
		{"instance-stop/alloc_vmm/before", `instance-start`},
		{"/alloc_vmm/before", `no saga template ""`},
	} {
		_, err := parseCrashPoint(tc.value, templates)
		if err == nil {
			t.Errorf("parseCrashPoint(%q) accepted it", tc.value)
			continue
		}
		for _, want := range []string{"--crash-point", tc.mention} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("parseCrashPoint(%q): %q does not mention %q", tc.value, err, want)
			}
		}
	}
}

func TestN5_NexusRefusesABadCrashPointBeforeStarting(t *testing.T) {
	cmd := command()
	cmd.SetArgs([]string{"--crash-point", "instance-start/nope/before", "--id", uuid.NewString(),
		"--database-url", t.TempDir() + "/nexus.db"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "--crash-point") || !strings.Contains(err.Error(), `no node "nope"`) {
		t.Fatalf("nexus with a bad --crash-point: %v", err)
	}
	if f := command().Flags().Lookup(crashPointFlag); f == nil || !f.Hidden {
		t.Fatalf("--%s should exist and be hidden: %+v", crashPointFlag, f)
	}
}

// TestN5_CrashPointStopsOnlyTheFirstSagaOfItsTemplateAtItsNode drives the
// hooks the way the engine calls them: only the first saga of the chosen
// template to reach the chosen node blocks, after logging the line tests
// wait for; other templates, other nodes and later sagas pass.
func TestN5_CrashPointStopsOnlyTheFirstSagaOfItsTemplateAtItsNode(t *testing.T) {
	for _, after := range []bool{false, true} {
		c := crashPoint{Template: sagas.InstanceStart, Node: "link_vmm", After: after}
		t.Run(c.String(), func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			first, other, later := uuid.New(), uuid.New(), uuid.New()
			templates := map[uuid.UUID]string{first: sagas.InstanceStart, other: sagas.InstanceUpdate, later: sagas.InstanceStart}
			var asked []uuid.UUID
			hooks := c.hooks(zap.New(core), func(_ context.Context, id uuid.UUID) (string, error) {
				asked = append(asked, id)
				if tmpl, ok := templates[id]; ok {
					return tmpl, nil
				}
				return "", errors.New("no such saga")
			})
			hook, unused := hooks.BeforeNode, hooks.AfterNode
			if after {
				hook, unused = hooks.AfterNode, hooks.BeforeNode
			}
			if unused != nil || hooks.BeforeUndo != nil || hooks.AfterUndo != nil {
				t.Fatalf("hooks %+v: want only the one for %s", hooks, c)
			}
			passes := func(id uuid.UUID, node string) {
				t.Helper()
				done := make(chan struct{})
				go func() {
					hook(id, node)
					close(done)
				}()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatalf("saga %s at %s was stopped; want it to pass", id, node)
				}
			}
			passes(first, "alloc_vmm")
			passes(other, "link_vmm")
			passes(uuid.New(), "link_vmm") // a saga whose template cannot be read
			if len(asked) != 2 {
				t.Fatalf("the hook read the template of %d sagas, want only the 2 at link_vmm", len(asked))
			}

			blocked := make(chan struct{})
			go func() {
				hook(first, "link_vmm")
				close(blocked)
			}()
			testutil.WaitFor(t, 10*time.Second, func() error {
				if logs.FilterMessageSnippet(crashPointMessage).Len() == 0 {
					return fmt.Errorf("no %q line; logs: %v", crashPointMessage, logs.All())
				}
				return nil
			})
			line := logs.FilterMessageSnippet(crashPointMessage).All()[0]
			fields := line.ContextMap()
			if line.Level != zapcore.WarnLevel || fields["saga_id"] != first.String() || fields["node"] != "link_vmm" ||
				fields["crash_point"] != c.String() {
				t.Fatalf("crash point line %s %v", line.Level, fields)
			}
			passes(later, "link_vmm")
			select {
			case <-blocked:
				t.Fatal("the saga at the crash point went on")
			default:
			}
			if n := logs.FilterMessageSnippet(crashPointMessage).Len(); n != 1 {
				t.Fatalf("%d crash point lines, want 1", n)
			}
		})
	}
}
