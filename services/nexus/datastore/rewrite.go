package datastore

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/services/nexus/model"
)

// rewriteRounds bounds how often a rewrite reads again after losing a race
// with another writer.
const rewriteRounds = 8

// rewrite is the one read-decide-write loop over a generation guard (N3):
// read the row, let next decide the runtime it becomes (ok false: nothing
// to write), write it through the guard, and read again if another writer
// got in first. It returns the row as last read, with the runtime written
// when it wrote.
func rewrite[Row, Runtime any](ctx context.Context, what string,
	read func(context.Context) (Row, error),
	next func(Row) (Runtime, bool, error),
	write func(context.Context, Runtime) (bool, error),
	apply func(Row, Runtime) Row) (Row, error) {
	for range rewriteRounds {
		row, err := read(ctx)
		if err != nil {
			return row, err
		}
		rt, ok, err := next(row)
		if err != nil || !ok {
			return row, err
		}
		wrote, err := write(ctx, rt)
		if err != nil || wrote {
			return apply(row, rt), err
		}
	}
	var zero Row
	return zero, fmt.Errorf("%w: %s kept changing while it was rewritten", model.ErrInstanceBusy, what)
}

// InstanceRewrite reads a live instance and writes the runtime next makes
// of it through the generation guard, reading again when another writer got
// in first. next returns false when there is nothing to write, and its
// error ends the rewrite. It returns the instance as last read or written;
// model.ErrNotFound when there is no live instance.
func (d *DataStore) InstanceRewrite(ctx context.Context, id uuid.UUID,
	next func(model.Instance) (model.InstanceRuntime, bool, error)) (model.Instance, error) {
	return rewrite(ctx, "instance "+id.String(),
		func(ctx context.Context) (model.Instance, error) { return d.InstanceGet(ctx, id) },
		next,
		func(ctx context.Context, rt model.InstanceRuntime) (bool, error) {
			return d.InstanceUpdateRuntime(ctx, id, rt)
		},
		func(i model.Instance, rt model.InstanceRuntime) model.Instance { i.Runtime = rt; return i })
}

// VMMRewrite is InstanceRewrite for a VMM's runtime.
func (d *DataStore) VMMRewrite(ctx context.Context, id uuid.UUID,
	next func(model.VMM) (model.VMMRuntime, bool, error)) (model.VMM, error) {
	return rewrite(ctx, "VMM "+id.String(),
		func(ctx context.Context) (model.VMM, error) { return d.VMMGet(ctx, id) },
		next,
		func(ctx context.Context, rt model.VMMRuntime) (bool, error) { return d.VMMUpdateRuntime(ctx, id, rt) },
		func(v model.VMM, rt model.VMMRuntime) model.VMM { v.Runtime = rt; return v })
}
