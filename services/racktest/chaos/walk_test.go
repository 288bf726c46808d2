package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// walk runs concurrent clients against one instance that follows the model
// exactly, one concrete situation at a time: every call takes effect at one
// moment of its interval (an indeterminate one possibly after it returned,
// or never), and a mutating call's answer is read at a later moment. Its
// histories are linearizable by construction, so the check must pass them:
// the encoding (answers as views, refusals, indeterminate calls as tokens,
// the merged token counts) never rules out an execution of the model.
type walk struct {
	rnd          *rand.Rand
	now          int64
	x            situation
	reincarnates bool
	calls        []Operation
	inFlight     []*pending
}

type pending struct {
	i       int // index in calls
	decided bool
	// needRead: the answer of a 2xx mutating call is still to be read.
	needRead bool
	returned bool
	// late: an indeterminate call whose effect is still to come, maybe
	// after it returned.
	late bool
}

var walkKinds = []Kind{KindStart, KindStop, KindReboot, KindForceTerminate, KindMigrate, KindView, KindView, KindList}

func (w *walk) tick() { w.now += 10 }

// background moves the instance on its own.
func (w *walk) background() { w.x = w.pick(background(w.x, w.reincarnates), w.x) }

// pick is a random situation of s; otherwise when s is empty.
func (w *walk) pick(s set, otherwise situation) situation {
	var all []situation
	s.each(func(y situation) { all = append(all, y) })
	if len(all) == 0 {
		return otherwise
	}
	return all[w.rnd.IntN(len(all))]
}

func (w *walk) invoke(client int) {
	kind := walkKinds[w.rnd.IntN(len(walkKinds))]
	w.calls = append(w.calls, Operation{Client: client, Kind: kind, Instance: vm, Invoke: w.now})
	w.inFlight = append(w.inFlight, &pending{i: len(w.calls) - 1})
}

// decide takes the call's effect now, with an outcome nexus can give here;
// false when it cannot take one now. An indeterminate call's effect comes
// later, or never.
func (w *walk) decide(p *pending) bool {
	c := &w.calls[p.i]
	switch {
	case !c.Kind.mutates():
		c.Status, c.RunState = 200, w.x.rs.String()
		if c.Kind == KindList {
			c.Items = map[string]string{vm: c.RunState}
		}
	case w.rnd.IntN(5) == 0:
		c.Status = []int{503, 500, 0}[w.rnd.IntN(3)]
		if c.Status == 0 {
			c.Error = "timeout"
		}
		p.late = w.rnd.IntN(3) > 0
	default:
		o, status := outcomeOK, 202
		if w.rnd.IntN(3) == 0 {
			o, status = outcomeRefused, refusals[c.Kind][w.rnd.IntN(len(refusals[c.Kind]))]
		}
		next := effects[c.Kind](w.x, o)
		if next.empty() {
			return false
		}
		w.x, c.Status, p.needRead = w.pick(next, w.x), status, o == outcomeOK
	}
	return true
}

// advance moves one call in flight a step: effect, answer read, return,
// and an indeterminate call's late effect.
func (w *walk) advance(p *pending) {
	c := &w.calls[p.i]
	switch {
	case !p.decided:
		p.decided = w.decide(p)
	case p.late && (p.returned || w.rnd.IntN(2) == 0):
		o := []outcome{outcomeOK, outcomeRefused}[w.rnd.IntN(2)]
		w.x, p.late = w.pick(effects[c.Kind](w.x, o), w.x), false
	case p.needRead && c.Kind == KindForceTerminate && (w.x.rs == rsStopping || w.x.rs == rsMigrating):
		// F1: its answer is its settled state, never stopping or migrating.
	case p.needRead:
		c.RunState, p.needRead = w.x.rs.String(), false
	case !p.returned:
		c.Returned, c.Return, p.returned = true, w.now, true
	}
	if p.returned && !p.late {
		w.inFlight = slices.DeleteFunc(w.inFlight, func(q *pending) bool { return q == p })
	}
}

func (w *walk) run(steps, clients int) {
	for range steps {
		w.tick()
		busy := w.busyClients()
		switch r := w.rnd.IntN(10); {
		case r < 2:
			w.background()
		case r < 5 && len(busy) < clients:
			for c := range clients {
				if !busy[c] {
					w.invoke(c)
					break
				}
			}
		case len(w.inFlight) > 0:
			w.advance(w.inFlight[w.rnd.IntN(len(w.inFlight))])
		}
	}
}

// busyClients are the clients waiting for an answer.
func (w *walk) busyClients() map[int]bool {
	busy := map[int]bool{}
	for _, p := range w.inFlight {
		if !p.returned {
			busy[w.calls[p.i].Client] = true
		}
	}
	return busy
}

func TestR1_EveryExecutionOfTheModelIsLinearizable(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 18))
			start := []runState{rsStopped, rsRunning}[seed%2]
			w := &walk{rnd: rnd, x: situation{rs: start}, reincarnates: seed%3 == 0}
			w.run(1000, 8)
			h := &History{tracked: []Tracked{{Instance: vm, RunState: start.String(), Reincarnates: w.reincarnates}}, ops: w.calls}
			res, err := Check(h, time.Minute, t.TempDir())
			if err != nil || res.Outcome != porcupine.Ok {
				t.Fatalf("a walk of the model (%d calls, %d indeterminate): %s: %v", res.Calls, res.Indeterminate, res.Outcome, err)
			}
		})
	}
}
