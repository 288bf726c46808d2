package sledclient

import (
	"context"

	"github.com/google/uuid"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/wire"
)

// Registration is a VMM to register with a sled-agent (V1).
type Registration struct {
	VMM      uuid.UUID
	Instance uuid.UUID
	Spec     model.VMMSpec
	// Migration is set for a migration target.
	Migration *MigrationTarget
}

// MigrationTarget is where a migration target pulls its guest from.
type MigrationTarget struct {
	Migration         uuid.UUID
	SourceVMM         uuid.UUID
	SourceSledAddress string
}

// EnsureRegistered registers a VMM on a sled and returns the runtime the
// sled answered.
func (p *Pool) EnsureRegistered(ctx context.Context, sled uuid.UUID, r Registration) (model.VMMRuntime, error) {
	req := &sledagentv1.EnsureRegisteredRequest{VmmId: r.VMM.String(), InstanceId: r.Instance.String(),
		Spec: wire.Spec(r.Spec), InitialRuntime: &sledagentv1.VmmRuntime{Generation: 1}}
	if m := r.Migration; m != nil {
		req.MigrationTarget = &sledagentv1.MigrationTargetParams{MigrationId: m.Migration.String(),
			SourceVmmId: m.SourceVMM.String(), SourceSledAddress: m.SourceSledAddress}
	}
	return call(ctx, p, sled, func(c sledagentv1.SledAgentClient) (model.VMMRuntime, error) {
		resp, err := c.EnsureRegistered(ctx, req)
		if err != nil {
			return model.VMMRuntime{}, err
		}
		return wire.Runtime(resp.GetRuntime())
	})
}

// EnsureState asks a sled to drive a VMM toward target (V2) and returns the
// runtime it answered.
func (p *Pool) EnsureState(ctx context.Context, sled, vmm uuid.UUID, target model.VMMTarget) (model.VMMRuntime, error) {
	return call(ctx, p, sled, func(c sledagentv1.SledAgentClient) (model.VMMRuntime, error) {
		resp, err := c.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: vmm.String(), Target: wire.Target(target)})
		if err != nil {
			return model.VMMRuntime{}, err
		}
		return wire.Runtime(resp.GetRuntime())
	})
}

// EnsureUnregistered rudely terminates a VMM (V3). It returns the runtime
// the sled answered, or nil when the sled does not know the VMM.
func (p *Pool) EnsureUnregistered(ctx context.Context, sled, vmm uuid.UUID) (*model.VMMRuntime, error) {
	return call(ctx, p, sled, func(c sledagentv1.SledAgentClient) (*model.VMMRuntime, error) {
		resp, err := c.EnsureUnregistered(ctx, &sledagentv1.EnsureUnregisteredRequest{VmmId: vmm.String()})
		if err != nil || resp.GetUpdatedRuntime() == nil {
			return nil, err
		}
		rt, err := wire.Runtime(resp.GetUpdatedRuntime())
		return &rt, err
	})
}

// VMMState asks a sled for a VMM's runtime (V4).
func (p *Pool) VMMState(ctx context.Context, sled, vmm uuid.UUID) (model.VMMRuntime, error) {
	return call(ctx, p, sled, func(c sledagentv1.SledAgentClient) (model.VMMRuntime, error) {
		resp, err := c.GetVmmState(ctx, &sledagentv1.GetVmmStateRequest{VmmId: vmm.String()})
		if err != nil {
			return model.VMMRuntime{}, err
		}
		return wire.Runtime(resp.GetRuntime())
	})
}

// call makes one call to a sled's agent and classifies its error.
func call[T any](ctx context.Context, p *Pool, sled uuid.UUID, f func(sledagentv1.SledAgentClient) (T, error)) (T, error) {
	client, err := p.client(ctx, sled)
	if err != nil {
		var zero T
		return zero, err
	}
	out, err := f(client)
	return out, classify(sled, err)
}
