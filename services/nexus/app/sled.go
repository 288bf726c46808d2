package app

import (
	"context"
	"net"
	"time"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// SledRegister records a sled-agent's registration (V8). Idempotent.
func (n *Nexus) SledRegister(ctx context.Context, req *nexusv1.RegisterSledRequest) error {
	var v apierror.Violations
	id := v.UUID("sled_id", req.GetSledId())
	if _, _, err := net.SplitHostPort(req.GetAddress()); err != nil {
		v.Add("address", "%q is not host:port", req.GetAddress())
	}
	if req.GetNcpus() == 0 {
		v.Add("ncpus", "must be at least 1")
	}
	if req.GetMemoryBytes() == 0 || req.GetMemoryBytes() > 1<<62 {
		v.Add("memory_bytes", "must be between 1 and 2^62, got %d", req.GetMemoryBytes())
	}
	if err := v.Err(); err != nil {
		return err
	}
	return n.ds.SledUpsert(ctx, model.Sled{
		ID: id, Address: req.GetAddress(), NCPUs: int64(req.GetNcpus()), MemoryBytes: int64(req.GetMemoryBytes()),
		Zpools: append([]string{}, req.GetZpools()...), TimeLastSeen: time.Now(),
	})
}

// SledHeartbeat records that a sled is alive; ErrNotFound (the agent then
// registers again) for a sled nexus does not know.
func (n *Nexus) SledHeartbeat(ctx context.Context, sledID string) error {
	var v apierror.Violations
	id := v.UUID("sled_id", sledID)
	if err := v.Err(); err != nil {
		return err
	}
	return n.ds.SledHeartbeat(ctx, id)
}

// SledView is a sled as operators see it: its record, and whether it
// answers (SPEC 6).
type SledView struct {
	Sled         model.Sled
	Reachability model.SledReachability
}

func (n *Nexus) sledView(s model.Sled, now time.Time) SledView {
	return SledView{Sled: s, Reachability: s.Reachability(now, n.sledHeartbeatTimeout)}
}

// SledList lists sleds a page at a time, by id.
func (n *Nexus) SledList(ctx context.Context, req *nexusv1.SledListRequest) ([]SledView, *string, error) {
	if err := authz.RequireFleetAdmin(ctx, "list sleds"); err != nil {
		return nil, nil, err
	}
	var v apierror.Violations
	p := parsePage(&v, "sleds", req.GetLimit(), req.GetPageToken(), req.GetSortBy(), idSorts...)
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	items, err := n.ds.SledListPage(ctx, p.after, p.limit)
	if err != nil || len(items) == 0 {
		return nil, nil, err
	}
	now := time.Now()
	views := make([]SledView, len(items))
	for i, s := range items {
		views[i] = n.sledView(s, now)
	}
	return views, p.next(len(items), items[len(items)-1].ID.String()), nil
}

// Sled is one sled (N15). Fleet admins only.
func (n *Nexus) Sled(ctx context.Context, sledID string) (SledView, error) {
	if err := authz.RequireFleetAdmin(ctx, "view a sled"); err != nil {
		return SledView{}, err
	}
	var v apierror.Violations
	id := v.UUID("sled_id", sledID)
	if err := v.Err(); err != nil {
		return SledView{}, err
	}
	s, err := n.ds.SledGet(ctx, id)
	if err != nil {
		return SledView{}, err
	}
	return n.sledView(s, time.Now()), nil
}

// SledInstance is an instance with a VMM on a sled, as operators see it.
type SledInstance struct {
	InstanceView
	ProjectName string
}

// SledInstances lists the instances whose active or target VMM is on a
// sled, a page at a time, by id (N15). Fleet admins only.
func (n *Nexus) SledInstances(ctx context.Context, req *nexusv1.SledInstanceListRequest) ([]SledInstance, *string, error) {
	if err := authz.RequireFleetAdmin(ctx, "list a sled's instances"); err != nil {
		return nil, nil, err
	}
	var v apierror.Violations
	sled := v.UUID("sled_id", req.GetSledId())
	p := parsePage(&v, "sled-instances/"+req.GetSledId(), req.GetLimit(), req.GetPageToken(), req.GetSortBy(), idSorts...)
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	if _, err := n.ds.SledGet(ctx, sled); err != nil {
		return nil, nil, err
	}
	items, err := n.ds.SledInstanceList(ctx, sled, p.after, p.limit)
	if err != nil || len(items) == 0 {
		return nil, nil, err
	}
	insts := make([]model.Instance, len(items))
	for i, it := range items {
		insts[i] = it.Instance
	}
	views, err := n.views(ctx, insts)
	if err != nil {
		return nil, nil, err
	}
	out := make([]SledInstance, len(items))
	for i, it := range items {
		out[i] = SledInstance{InstanceView: views[i], ProjectName: it.ProjectName}
	}
	return out, p.next(len(items), items[len(items)-1].Instance.ID.String()), nil
}
