package saga_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/rackplane/rackplane/pkg/backoff"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

var ctx = context.Background()

var fastRetry = backoff.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}

const undoAttempts = 3

// errAway is an undo's error that WithUndoRetryWhile is told will pass.
var errAway = errors.New("the sled does not answer")

func away(err error) bool { return errors.Is(err, errAway) }

func newEngine(t *testing.T, store saga.Store, nexusID uuid.UUID, w *world, opts ...saga.Option) *saga.Engine {
	t.Helper()
	opts = append([]saga.Option{saga.WithUndoRetry(undoAttempts, fastRetry), saga.WithStoreRetry(fastRetry)}, opts...)
	if ds, ok := store.(*datastore.DataStore); ok {
		activeReplica(t, ds, nexusID)
	}
	e := saga.New(store, nexusID, zaptest.NewLogger(t), opts...)
	if err := e.Register(w.template()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	return e
}

// activeReplica records id as an active nexus replica: only one may
// create sagas (X3).
func activeReplica(t *testing.T, ds *datastore.DataStore, id uuid.UUID) {
	t.Helper()
	if _, err := ds.NexusRegister(ctx, model.NexusZone{ID: id, InternalAddress: "127.0.0.1:1", ExternalAddress: "127.0.0.1:2",
		TimeCreated: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// patience bounds every wait in these tests.
const patience = 30 * time.Second

// waitCtx bounds a wait on a saga, so that a hung saga fails its test.
func waitCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(ctx, patience)
	t.Cleanup(cancel)
	return c
}

const templateName = "test-chain"

// nodes of the test saga; "c" has nothing to undo.
var nodes = []string{"a", "b", "c", "d"}

var errInjected = errors.New("injected failure")

// errLostAnswer is an action's failure that WithAmbiguousActionErrors is
// told may follow its effect.
var errLostAnswer = errors.New("the connection dropped before the commit was acknowledged")

type params struct {
	Base int `json:"base"`
}

// step is each node's output: the previous node's value plus one, so the
// outputs prove that params and earlier outputs reach every node.
type step struct {
	Value int `json:"value"`
}

const base = 100

// world is what the test saga acts on: a journal of every action and undo
// run, in order, and the faults to inject.
type world struct {
	failAction string // this node's action fails
	// lostAnswer's action takes effect and then fails with errLostAnswer,
	// as a write whose commit was not acknowledged.
	lostAnswer string
	failUndo   string // this node's undo always fails
	// awayUndo's undo fails with errAway its first awayTimes tries (every
	// try when awayTimes < 0), as an undo whose sled does not answer.
	awayUndo  string
	awayTimes int

	mu      sync.Mutex
	journal []string
}

func (w *world) note(entry string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.journal = append(w.journal, entry)
}

func (w *world) entries() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.journal)
}

func (w *world) count(entry string) int {
	n := 0
	for _, e := range w.entries() {
		if e == entry {
			n++
		}
	}
	return n
}

func (w *world) template() saga.Template {
	t := saga.Template{Name: templateName}
	for i, name := range nodes {
		n := saga.Node{Name: name, Action: w.action(i)}
		if name != "c" {
			n.Undo = w.undo(name)
		}
		t.Nodes = append(t.Nodes, n)
	}
	return t
}

func (w *world) action(i int) saga.ActionFunc {
	name := nodes[i]
	return func(_ context.Context, sc *saga.Context) (any, error) {
		w.note("do " + name)
		var p params
		if err := sc.Params(&p); err != nil {
			return nil, err
		}
		prev := p.Base
		if i > 0 {
			var s step
			if err := sc.Output(nodes[i-1], &s); err != nil {
				return nil, err
			}
			prev = s.Value
		}
		if w.failAction == name {
			return nil, fmt.Errorf("node %s: %w", name, errInjected)
		}
		if w.lostAnswer == name {
			return nil, fmt.Errorf("node %s: %w", name, errLostAnswer)
		}
		return step{Value: prev + 1}, nil
	}
}

func (w *world) undo(name string) saga.UndoFunc {
	return func(_ context.Context, sc *saga.Context) error {
		w.note("undo " + name)
		var s step
		if err := sc.Output(name, &s); err != nil && !errors.Is(err, saga.ErrNoOutput) {
			return err
		}
		if w.failUndo == name {
			return errors.New("undo refuses")
		}
		if w.awayUndo == name && (w.awayTimes < 0 || w.count("undo "+name) <= w.awayTimes) {
			return errAway
		}
		return nil
	}
}

// wantOutputs checks that every node up to and excluding upTo returned
// base plus its position.
func wantOutputs(t *testing.T, res saga.Result, upTo int) {
	t.Helper()
	for i, name := range nodes[:upTo] {
		var s step
		if err := res.Output(name, &s); err != nil || s.Value != base+i+1 {
			t.Errorf("output of %s: %+v, %v; want value %d", name, s, err, base+i+1)
		}
	}
	for _, name := range nodes[upTo:] {
		if err := res.Output(name, &step{}); !errors.Is(err, saga.ErrNoOutput) {
			t.Errorf("output of %s, which never succeeded: %v, want ErrNoOutput", name, err)
		}
	}
}

// eventsOf returns a saga's log as "node event" strings.
func eventsOf(t *testing.T, store saga.Store, id uuid.UUID) map[string]bool {
	t.Helper()
	events, err := store.SagaEvents(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]bool)
	for _, e := range events {
		out[e.Node+" "+string(e.Type)] = true
	}
	return out
}

type window int

const (
	beforeAction window = iota // "started" logged, action not run
	afterAction                // action ran, outcome not logged
	afterUndo                  // undo ran, outcome not logged
)

func (w window) String() string {
	return [...]string{"before-action", "after-action", "after-undo"}[w]
}

// crashAt runs a saga on a nexus that freezes at node's window and then
// dies as with kill -9: its database handle closed, its context cancelled,
// the frozen goroutine never logging another event. It returns the saga.
func crashAt(t *testing.T, db racktest.Database, nexusID uuid.UUID, w *world, at window, node string) uuid.UUID {
	t.Helper()
	reached := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	freeze := func(_ uuid.UUID, n string) {
		if n != node {
			return
		}
		once.Do(func() { close(reached) })
		<-release
	}
	var hooks saga.Hooks
	switch at {
	case beforeAction:
		hooks.BeforeNode = freeze
	case afterAction:
		hooks.AfterNode = freeze
	case afterUndo:
		hooks.AfterUndo = freeze
	}
	ds := db.Open(t)
	doomed := newEngine(t, ds, nexusID, w, saga.WithHooks(hooks))
	id, err := doomed.Start(ctx, templateName, params{Base: base})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-waitCtx(t).Done():
		t.Fatalf("saga never reached %s of %s", at, node)
	}
	ds.Close()
	gone, cancel := context.WithCancel(ctx)
	cancel()
	doomed.Shutdown(gone) //nolint:errcheck // it cannot finish: it is frozen
	// Registered after newEngine's cleanup, so it runs first and that
	// Shutdown can return.
	t.Cleanup(func() { close(release) })
	return id
}
