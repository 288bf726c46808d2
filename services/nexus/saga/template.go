package saga

import (
	"context"
	"errors"
	"fmt"
)

// ActionFunc does a node's work. It must be idempotent: after a crash it
// runs again, possibly after it already took effect. A non-nil output is
// stored as JSON and read by later nodes with Context.Output. An action
// that fails must leave nothing behind: its own undo is not run.
type ActionFunc func(ctx context.Context, sc *Context) (any, error)

// UndoFunc reverts a node's action. It must be idempotent and must tolerate
// an action that never took effect, since a node whose outcome was not
// logged before a crash is undone too.
type UndoFunc func(ctx context.Context, sc *Context) error

// ActionWith adapts an action that takes the saga's parameters decoded
// into a P, so that no action decodes them itself.
func ActionWith[P any](f func(ctx context.Context, sc *Context, p P) (any, error)) ActionFunc {
	return func(ctx context.Context, sc *Context) (any, error) {
		var p P
		if err := sc.Params(&p); err != nil {
			return nil, err
		}
		return f(ctx, sc, p)
	}
}

// UndoWith is ActionWith for an undo.
func UndoWith[P any](f func(ctx context.Context, sc *Context, p P) error) UndoFunc {
	return func(ctx context.Context, sc *Context) error {
		var p P
		if err := sc.Params(&p); err != nil {
			return err
		}
		return f(ctx, sc, p)
	}
}

// Node is one step of a saga.
type Node struct {
	Name   string
	Action ActionFunc
	// Undo is nil for a node with nothing to revert.
	Undo UndoFunc
}

// Template is a kind of saga. Its nodes run one after another in order.
type Template struct {
	Name  string
	Nodes []Node
}

func (t Template) validate() error {
	if t.Name == "" {
		return errors.New("saga template without a name")
	}
	if len(t.Nodes) == 0 {
		return fmt.Errorf("saga template %q has no nodes", t.Name)
	}
	seen := make(map[string]bool, len(t.Nodes))
	for i, n := range t.Nodes {
		switch {
		case n.Name == "":
			return fmt.Errorf("saga template %q: node %d has no name", t.Name, i)
		case seen[n.Name]:
			return fmt.Errorf("saga template %q: node name %q is used twice", t.Name, n.Name)
		case n.Action == nil:
			return fmt.Errorf("saga template %q: node %q has no action", t.Name, n.Name)
		}
		seen[n.Name] = true
	}
	return nil
}

func (t Template) has(node string) bool {
	for _, n := range t.Nodes {
		if n.Name == node {
			return true
		}
	}
	return false
}
