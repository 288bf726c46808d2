package nexus_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oxidecomputer/oxide.go/oxide"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/racktest"
)

type stuckSagaJSON struct {
	ID          string    `json:"id"`
	Template    string    `json:"template"`
	Owner       string    `json:"owner"`
	TimeCreated time.Time `json:"time_created"`
	Node        string    `json:"node"`
	Error       string    `json:"error"`
	Params      string    `json:"params"`
}

func listStuck(t *testing.T, n *nexus.Server, token string, wantStatus int) []stuckSagaJSON {
	t.Helper()
	resp := racktest.NewClient("", token).Call(t, http.MethodGet, n.ExternalURL()+"/v1/system/sagas/stuck", "")
	if resp.Status != wantStatus {
		t.Fatalf("GET /v1/system/sagas/stuck: %d, want %d: %s", resp.Status, wantStatus, resp.Body)
	}
	if wantStatus != http.StatusOK {
		var e racktest.Error
		if err := json.Unmarshal(resp.Body, &e); err != nil || e.RequestID == "" || e.ErrorCode == "" {
			t.Fatalf("error resp.Body %s (%v), want an Oxide error", resp.Body, err)
		}
		return nil
	}
	var page struct {
		Items *[]stuckSagaJSON `json:"items"`
	}
	if err := json.Unmarshal(resp.Body, &page); err != nil || page.Items == nil {
		t.Fatalf("resp.Body %s (%v), want {\"items\": [...]}", resp.Body, err)
	}
	return *page.Items
}

// A start saga whose VMM fails to run unwinds; the sled dies just before
// the undo of the VMM's registration, so that undo keeps failing (the
// sled-agent is really gone: connection refused) and the saga is stuck.
// The operator finds it through the API, the metrics and the error log.
func TestN5_AStuckSagaIsReportedToTheOperator(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			// The hook hands the moment before the undo to the test
			// goroutine, which stops the sled, and waits for it.
			undoing, sledDown := make(chan uuid.UUID, 1), make(chan struct{})
			var once sync.Once
			hooks := saga.Hooks{BeforeUndo: func(id uuid.UUID, node string) {
				if node != "ensure_registered" {
					return
				}
				once.Do(func() {
					undoing <- id
					<-sledDown
				})
			}}
			core, logs := observer.New(zap.ErrorLevel)
			log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core(), core))
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1, Log: log,
				// The sled is stopped for good: its undo is stuck once the
				// wait for an away sled, shortened here, runs out.
				NexusOptions: []nexus.Option{nexus.WithSagaOptions(saga.WithHooks(hooks)), nexus.WithAwayUndoBound(time.Second)}})
			n, agent := r.Server(), r.Agents()[0]
			admin := r.Token(racktest.FleetAdmin)
			c := racktest.NewClient(n.ExternalURL(), admin).SDK(t)
			if _, err := c.ProjectCreate(ctx, oxide.ProjectCreateParams{Body: &oxide.ProjectCreate{Name: "p"}}); err != nil {
				t.Fatal(err)
			}
			inst := createInstance(t, c, "p", "vm", false)
			collaborator := r.InProcessNexus(0).Token("alice", app.Grant{Project: "p", Role: "collaborator"})

			listStuck(t, n, collaborator, http.StatusForbidden)
			listStuck(t, n, "", http.StatusUnauthorized)
			if got := listStuck(t, n, admin, http.StatusOK); len(got) != 0 {
				t.Fatalf("stuck sagas before any got stuck: %+v", got)
			}

			if _, err := agent.Sim.FailEnsureState(ctx, &sledagentv1.FailEnsureStateRequest{Count: 1, Message: "injected: the VMM will not run"}); err != nil {
				t.Fatal(err)
			}
			started := make(chan error, 1)
			go func() {
				_, err := c.InstanceStart(ctx, oxide.InstanceStartParams{Project: "p", Instance: "vm"})
				started <- err
			}()
			var sagaID uuid.UUID
			select {
			case sagaID = <-undoing:
			case err := <-started:
				t.Fatalf("the start ended (%v) without undoing its registration", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the start saga did not begin to unwind within 10s")
			}
			agent.Stop()
			close(sledDown)
			select {
			case err := <-started:
				if err == nil {
					t.Fatal("a start whose saga got stuck succeeded")
				}
			// After the 1 s wait for the away sled, the undo still has its
			// counted tries, whose backoff has grown to its 5 s cap.
			case <-time.After(time.Minute):
				t.Fatal("the stuck start did not answer within a minute")
			}

			rec, err := n.DataStore().SagaGet(ctx, sagaID)
			if err != nil || rec.State != saga.StateStuck {
				t.Fatalf("saga %s: %+v, %v; want it stuck", sagaID, rec, err)
			}
			got := listStuck(t, n, admin, http.StatusOK)
			if len(got) != 1 {
				t.Fatalf("stuck sagas %+v, want the one start", got)
			}
			s := got[0]
			if s.ID != sagaID.String() || s.Template != "instance-start" || s.Owner != rec.Owner.String() ||
				s.Node != "ensure_registered" || !strings.Contains(s.Error, "unreachable") ||
				!strings.Contains(s.Params, inst.Id) || !s.TimeCreated.Equal(rec.TimeCreated) {
				t.Errorf("stuck saga %+v, want saga %s of instance %s stuck undoing ensure_registered on an unreachable sled (row %+v)",
					s, sagaID, inst.Id, rec)
			}
			listStuck(t, n, collaborator, http.StatusForbidden)

			m := scrape(t, n)
			for _, e := range []struct {
				name   string
				labels map[string]string
			}{
				{"nexus_sagas_stuck", nil},
				{"nexus_sagas_total", labels("outcome", "stuck")},
			} {
				if v, ok := sample(m, e.name, e.labels); !ok || v != 1 {
					t.Errorf("%s%v = %v (present %v), want 1", e.name, e.labels, v, ok)
				}
			}

			var stuckLogs []observer.LoggedEntry
			for _, e := range logs.FilterMessageSnippet("saga stuck").All() {
				if e.ContextMap()["saga_id"] == sagaID.String() {
					stuckLogs = append(stuckLogs, e)
				}
			}
			if len(stuckLogs) != 1 {
				t.Fatalf("%d error logs of the stuck saga, want 1: %+v", len(stuckLogs), logs.All())
			}
			fields := stuckLogs[0].ContextMap()
			if stuckLogs[0].Level != zap.ErrorLevel || fields["saga"] != "instance-start" || fields["node"] != "ensure_registered" ||
				!strings.Contains(fmt.Sprint(fields["error"]), "unreachable") {
				t.Errorf("stuck saga logged as %v %q %v", stuckLogs[0].Level, stuckLogs[0].Message, fields)
			}
		})
	}
}
