package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/services/nexus/saga"
	"github.com/rackplane/rackplane/services/nexus/sagas"
)

// crashPointFlag is the hidden test hook's flag: see command's doc comment.
const crashPointFlag = "crash-point"

// crashPointMessage is logged when a saga reaches the crash point; tests
// wait for it before they kill the process.
const crashPointMessage = "crash point reached"

// crashPoint is where --crash-point stops a saga: before a node's action
// (its "started" event is durable, the action has not run) or after it (the
// action took effect, its outcome is not logged yet).
type crashPoint struct {
	Template string
	Node     string
	After    bool
}

func (c crashPoint) String() string {
	at := "before"
	if c.After {
		at = "after"
	}
	return c.Template + "/" + c.Node + "/" + at
}

// parseCrashPoint reads <template>/<node>/<before|after> and checks that
// the template and node exist among templates.
func parseCrashPoint(value string, templates []saga.Template) (crashPoint, error) {
	bad := func(format string, args ...any) (crashPoint, error) {
		return crashPoint{}, fmt.Errorf("--%s %q: %s", crashPointFlag, value, fmt.Sprintf(format, args...))
	}
	parts := strings.Split(value, "/")
	if len(parts) != 3 {
		return bad("want <template>/<node>/<before|after>, e.g. %s/ensure_registered/after", sagas.InstanceStart)
	}
	c := crashPoint{Template: parts[0], Node: parts[1]}
	switch parts[2] {
	case "before":
	case "after":
		c.After = true
	default:
		return bad("%q is not before or after", parts[2])
	}
	var names []string
	for _, t := range templates {
		names = append(names, t.Name)
		if t.Name != c.Template {
			continue
		}
		var nodes []string
		for _, n := range t.Nodes {
			if n.Name == c.Node {
				return c, nil
			}
			nodes = append(nodes, n.Name)
		}
		return bad("saga %s has no node %q (it has %s)", c.Template, c.Node, strings.Join(nodes, ", "))
	}
	slices.Sort(names)
	return bad("no saga template %q (there are %s)", c.Template, strings.Join(names, ", "))
}

// crashPoints are every --crash-point given: each stops the first saga of
// its template to reach it.
type crashPoints []crashPoint

// hooks runs each point's hook in turn.
func (cs crashPoints) hooks(log *zap.Logger, templateOf func(context.Context, uuid.UUID) (string, error)) saga.Hooks {
	var before, after []func(uuid.UUID, string)
	for _, c := range cs {
		h := c.hooks(log, templateOf)
		if h.BeforeNode != nil {
			before = append(before, h.BeforeNode)
		}
		if h.AfterNode != nil {
			after = append(after, h.AfterNode)
		}
	}
	each := func(hooks []func(uuid.UUID, string)) func(uuid.UUID, string) {
		return func(id uuid.UUID, node string) {
			for _, h := range hooks {
				h(id, node)
			}
		}
	}
	return saga.Hooks{BeforeNode: each(before), AfterNode: each(after)}
}

func (cs crashPoints) String() string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.String()
	}
	return strings.Join(names, ", ")
}

// hooks returns saga hooks that stop the first saga of c's template to
// reach c for good: they log crashPointMessage at warn level and block
// forever, so that a test can kill -9 the process right there. templateOf
// names a saga's template; it is asked only about sagas at c's node.
func (c crashPoint) hooks(log *zap.Logger, templateOf func(context.Context, uuid.UUID) (string, error)) saga.Hooks {
	var reached atomic.Bool
	stop := func(sagaID uuid.UUID, node string) {
		if node != c.Node || reached.Load() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		template, err := templateOf(ctx, sagaID)
		cancel()
		if err != nil {
			log.Error("crash point: cannot tell the saga's template; letting it pass",
				zap.Stringer("saga_id", sagaID), zap.String("node", node), zap.Error(err))
			return
		}
		if template != c.Template || !reached.CompareAndSwap(false, true) {
			return
		}
		log.Warn(crashPointMessage+"; this saga stops here for good (test hook)",
			zap.Stringer("saga_id", sagaID), zap.String("saga", template), zap.String("node", node),
			zap.String("crash_point", c.String()))
		log.Sync() //nolint:errcheck // the line is what matters; nothing to do if stderr is gone
		select {}
	}
	if c.After {
		return saga.Hooks{AfterNode: stop}
	}
	return saga.Hooks{BeforeNode: stop}
}
