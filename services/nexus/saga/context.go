package saga

import (
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"go.uber.org/zap"
)

// Context is what an action or undo knows about its saga.
type Context struct {
	id      uuid.UUID
	node    string
	params  json.RawMessage
	outputs map[string]json.RawMessage
	log     *zap.Logger
}

// SagaID identifies the saga; actions can use it as an idempotency key.
func (c *Context) SagaID() uuid.UUID { return c.id }

// Node is the name of the node being run or undone.
func (c *Context) Node() string { return c.node }

// Log is the engine's logger with the saga and node attached.
func (c *Context) Log() *zap.Logger { return c.log }

// Params decodes the saga's parameters into v.
func (c *Context) Params(v any) error {
	if err := json.Unmarshal(c.params, v); err != nil {
		return fmt.Errorf("saga %s: decoding params: %w", c.id, err)
	}
	return nil
}

// Output decodes the output of an earlier node into v; ErrNoOutput when
// that node has not succeeded or returned nothing, which an undo meets when
// its own action never finished.
func (c *Context) Output(node string, v any) error {
	return decodeOutput(c.id, c.outputs, node, v)
}

func decodeOutput(id uuid.UUID, outputs map[string]json.RawMessage, node string, v any) error {
	raw, ok := outputs[node]
	if !ok {
		return fmt.Errorf("saga %s, node %q: %w", id, node, ErrNoOutput)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("saga %s: decoding the output of node %q: %w", id, node, err)
	}
	return nil
}
