package api

import (
	"context"

	"google.golang.org/grpc/metadata"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// External serves NexusExternal, the API behind the REST gateway.
type External struct {
	nexusv1.UnimplementedNexusExternalServer
	nexus *app.Nexus
}

// NewExternal returns the external API handlers.
func NewExternal(n *app.Nexus) *External { return &External{nexus: n} }

func (h *External) ProjectList(ctx context.Context, req *nexusv1.ProjectListRequest) (*nexusv1.ProjectListResponse, error) {
	items, next, err := h.nexus.ProjectList(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &nexusv1.ProjectListResponse{Items: make([]*nexusv1.Project, 0, len(items)), NextPage: next}
	for _, p := range items {
		resp.Items = append(resp.Items, projectProto(p))
	}
	return resp, nil
}

func (h *External) ProjectCreate(ctx context.Context, req *nexusv1.ProjectCreateRequest) (*nexusv1.ProjectCreateResponse, error) {
	p, err := h.nexus.ProjectCreate(ctx, req.GetProject())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.ProjectCreateResponse{Project: projectProto(p)}, nil
}

func (h *External) ProjectView(ctx context.Context, req *nexusv1.ProjectViewRequest) (*nexusv1.ProjectViewResponse, error) {
	p, err := h.nexus.Project(ctx, req.GetProject())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.ProjectViewResponse{Project: projectProto(p)}, nil
}

func (h *External) ProjectUpdate(ctx context.Context, req *nexusv1.ProjectUpdateRequest) (*nexusv1.ProjectUpdateResponse, error) {
	p, err := h.nexus.ProjectUpdate(ctx, req.GetProject(), req.GetUpdate())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.ProjectUpdateResponse{Project: projectProto(p)}, nil
}

func (h *External) ProjectDelete(ctx context.Context, req *nexusv1.ProjectDeleteRequest) (*nexusv1.ProjectDeleteResponse, error) {
	if err := h.nexus.ProjectDelete(ctx, req.GetProject()); err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.ProjectDeleteResponse{}, nil
}

func (h *External) SledList(ctx context.Context, req *nexusv1.SledListRequest) (*nexusv1.SledListResponse, error) {
	items, next, err := h.nexus.SledList(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &nexusv1.SledListResponse{Items: make([]*nexusv1.Sled, 0, len(items)), NextPage: next}
	for _, s := range items {
		resp.Items = append(resp.Items, sledProto(s))
	}
	return resp, nil
}

func projectProto(p model.Project) *nexusv1.Project {
	return &nexusv1.Project{Id: p.ID.String(), Name: p.Name, Description: p.Description,
		TimeCreated: timestamppb.New(p.TimeCreated), TimeModified: timestamppb.New(p.TimeModified)}
}

// rackID is the one rack a simulated deployment has.
const rackID = "de608e01-b8e4-4d93-b972-a7dbed36dd22"

// The one silo every principal belongs to, as Oxide's API names one: this
// product has no silos.
const (
	siloID   = "7c3a8e0a-5d2b-4b8e-9a51-0d6c2f4e1b90"
	siloName = "default"
)

func (h *External) SledView(ctx context.Context, req *nexusv1.SledViewRequest) (*nexusv1.SledViewResponse, error) {
	s, err := h.nexus.Sled(ctx, req.GetSledId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.SledViewResponse{Sled: sledProto(s)}, nil
}

func (h *External) SledInstanceList(ctx context.Context, req *nexusv1.SledInstanceListRequest) (*nexusv1.SledInstanceListResponse, error) {
	items, next, err := h.nexus.SledInstances(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &nexusv1.SledInstanceListResponse{Items: make([]*nexusv1.SledInstance, 0, len(items)), NextPage: next}
	for _, si := range items {
		i := si.Instance
		out := &nexusv1.SledInstance{
			Id: i.ID.String(), Name: i.Name, ProjectName: si.ProjectName, SiloName: siloName,
			Memory: uint64(i.MemoryBytes), Ncpus: uint32(i.NCPUs), State: si.RunState,
			TimeCreated: timestamppb.New(i.TimeCreated), TimeModified: timestamppb.New(i.TimeModified),
		}
		if si.ActiveSled != nil {
			out.ActiveSledId = si.ActiveSled.String()
		}
		if m := i.Runtime.MigrationID; m != nil {
			out.MigrationId = proto.String(m.String())
		}
		resp.Items = append(resp.Items, out)
	}
	return resp, nil
}

func (h *External) CurrentUserView(ctx context.Context, _ *nexusv1.CurrentUserViewRequest) (*nexusv1.CurrentUserViewResponse, error) {
	a, err := h.nexus.Me(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.CurrentUserViewResponse{User: &nexusv1.CurrentUser{
		Id: a.UserID().String(), DisplayName: a.Principal, SiloId: siloID, SiloName: siloName,
		FleetViewer: a.FleetAdmin, SiloAdmin: a.FleetAdmin,
		// A principal's name never changes: it was last modified when made.
		TimeCreated: timestamppb.New(a.Since), TimeModified: timestamppb.New(a.Since),
	}}, nil
}

func (h *External) CurrentUserAccessTokenList(ctx context.Context, req *nexusv1.CurrentUserAccessTokenListRequest) (*nexusv1.CurrentUserAccessTokenListResponse, error) {
	items, next, err := h.nexus.AccessTokens(ctx, false, req.GetLimit(), req.GetPageToken(), req.GetSortBy())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.CurrentUserAccessTokenListResponse{Items: accessTokensProto(items, false), NextPage: next}, nil
}

func (h *External) CurrentUserAccessTokenDelete(ctx context.Context, req *nexusv1.CurrentUserAccessTokenDeleteRequest) (*nexusv1.CurrentUserAccessTokenDeleteResponse, error) {
	if err := h.nexus.AccessTokenRevoke(ctx, false, req.GetTokenId()); err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.CurrentUserAccessTokenDeleteResponse{}, nil
}

func (h *External) AccessTokenList(ctx context.Context, req *nexusv1.AccessTokenListRequest) (*nexusv1.AccessTokenListResponse, error) {
	items, next, err := h.nexus.AccessTokens(ctx, true, req.GetLimit(), req.GetPageToken(), req.GetSortBy())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.AccessTokenListResponse{Items: accessTokensProto(items, true), NextPage: next}, nil
}

func (h *External) AccessTokenCreate(ctx context.Context, req *nexusv1.AccessTokenCreateRequest) (*nexusv1.AccessTokenCreateResponse, error) {
	params := req.GetToken()
	grants := make([]app.Grant, 0, len(params.GetRoles()))
	for _, r := range params.GetRoles() {
		grants = append(grants, app.Grant{FleetAdmin: r.GetRole() == "admin", Role: r.GetRole(), Project: r.GetProject()})
	}
	tok, secret, err := h.nexus.AccessTokenCreate(ctx, params.GetPrincipal(), grants, params.GetExpiresInSeconds())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &nexusv1.AccessTokenCreated{Id: tok.ID.String(), Token: secret, Principal: tok.Principal,
		TimeCreated: timestamppb.New(tok.TimeCreated)}
	if tok.TimeExpires != nil {
		out.TimeExpires = timestamppb.New(*tok.TimeExpires)
	}
	return &nexusv1.AccessTokenCreateResponse{Token: out}, nil
}

func (h *External) AccessTokenDelete(ctx context.Context, req *nexusv1.AccessTokenDeleteRequest) (*nexusv1.AccessTokenDeleteResponse, error) {
	if err := h.nexus.AccessTokenRevoke(ctx, true, req.GetTokenId()); err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.AccessTokenDeleteResponse{}, nil
}

func accessTokensProto(items []model.AccessToken, withPrincipal bool) []*nexusv1.AccessToken {
	out := make([]*nexusv1.AccessToken, 0, len(items))
	for _, t := range items {
		p := &nexusv1.AccessToken{Id: t.ID.String(), TimeCreated: timestamppb.New(t.TimeCreated)}
		if t.TimeExpires != nil {
			p.TimeExpires = timestamppb.New(*t.TimeExpires)
		}
		if withPrincipal {
			p.Principal = proto.String(t.Principal)
		}
		out = append(out, p)
	}
	return out
}

func sledProto(v app.SledView) *nexusv1.Sled {
	s := v.Sled
	return &nexusv1.Sled{
		Id:                    s.ID.String(),
		Baseboard:             &nexusv1.Baseboard{Part: "sim-gimlet", Serial: s.ID.String()[:8]},
		Policy:                &nexusv1.SledPolicy{Kind: "in_service", ProvisionPolicy: "provisionable"},
		RackId:                rackID,
		State:                 "active",
		TimeCreated:           timestamppb.New(s.TimeCreated),
		TimeModified:          timestamppb.New(s.TimeModified),
		UsableHardwareThreads: uint32(s.NCPUs),
		UsablePhysicalRam:     uint64(s.MemoryBytes),
		Reachability:          string(v.Reachability),
		TimeLastSeen:          timestamppb.New(s.TimeLastSeen),
	}
}

func (h *External) InstanceList(ctx context.Context, req *nexusv1.InstanceListRequest) (*nexusv1.InstanceListResponse, error) {
	items, next, err := h.nexus.InstanceList(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &nexusv1.InstanceListResponse{Items: make([]*nexusv1.Instance, 0, len(items)), NextPage: next}
	for _, v := range items {
		resp.Items = append(resp.Items, instanceProto(v))
	}
	return resp, nil
}

func (h *External) InstanceCreate(ctx context.Context, req *nexusv1.InstanceCreateRequest) (*nexusv1.InstanceCreateResponse, error) {
	v, err := h.nexus.InstanceCreate(ctx, req.GetProject(), req.GetInstance())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.InstanceCreateResponse{Instance: instanceProto(v)}, nil
}

func (h *External) InstanceView(ctx context.Context, req *nexusv1.InstanceViewRequest) (*nexusv1.InstanceViewResponse, error) {
	v, err := h.nexus.Instance(ctx, req.GetInstance(), req.GetProject())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.InstanceViewResponse{Instance: instanceProto(v)}, nil
}

// IfMatchKey is the gRPC metadata of an instance update's precondition:
// the REST gateway puts an If-Match header there (the two layers share no
// package, so the gateway spells the key out).
const IfMatchKey = "if-match"

func (h *External) InstanceUpdate(ctx context.Context, req *nexusv1.InstanceUpdateRequest) (*nexusv1.InstanceUpdateResponse, error) {
	var ifMatch string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if values := md.Get(IfMatchKey); len(values) > 0 {
			ifMatch = values[0]
		}
	}
	v, err := h.nexus.InstanceUpdate(ctx, req.GetInstance(), req.GetProject(), req.GetUpdate(), ifMatch)
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.InstanceUpdateResponse{Instance: instanceProto(v)}, nil
}

func (h *External) InstanceDelete(ctx context.Context, req *nexusv1.InstanceDeleteRequest) (*nexusv1.InstanceDeleteResponse, error) {
	if err := h.nexus.InstanceDelete(ctx, req.GetInstance(), req.GetProject()); err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.InstanceDeleteResponse{}, nil
}

func (h *External) InstanceStart(ctx context.Context, req *nexusv1.InstanceStartRequest) (*nexusv1.InstanceStartResponse, error) {
	v, err := h.nexus.InstanceStart(ctx, req.GetInstance(), req.GetProject())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.InstanceStartResponse{Instance: instanceProto(v)}, nil
}

func (h *External) InstanceStop(ctx context.Context, req *nexusv1.InstanceStopRequest) (*nexusv1.InstanceStopResponse, error) {
	v, err := h.nexus.InstanceStop(ctx, req.GetInstance(), req.GetProject())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.InstanceStopResponse{Instance: instanceProto(v)}, nil
}

func (h *External) InstanceReboot(ctx context.Context, req *nexusv1.InstanceRebootRequest) (*nexusv1.InstanceRebootResponse, error) {
	v, err := h.nexus.InstanceReboot(ctx, req.GetInstance(), req.GetProject())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.InstanceRebootResponse{Instance: instanceProto(v)}, nil
}

func (h *External) ForceTerminateInstance(ctx context.Context, req *nexusv1.ForceTerminateInstanceRequest) (*nexusv1.ForceTerminateInstanceResponse, error) {
	v, err := h.nexus.InstanceForceTerminate(ctx, req.GetInstance(), req.GetProject())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.ForceTerminateInstanceResponse{Instance: instanceProto(v)}, nil
}

func (h *External) InstanceMigrate(ctx context.Context, req *nexusv1.InstanceMigrateRequest) (*nexusv1.InstanceMigrateResponse, error) {
	v, err := h.nexus.InstanceMigrate(ctx, req.GetInstance(), req.GetProject(), req.GetMigrate())
	if err != nil {
		return nil, toStatus(err)
	}
	return &nexusv1.InstanceMigrateResponse{Instance: instanceProto(v)}, nil
}

func instanceProto(v app.InstanceView) *nexusv1.Instance {
	i := v.Instance
	out := &nexusv1.Instance{
		Id: i.ID.String(), Name: i.Name, Description: i.Description, Hostname: i.Hostname,
		Memory: uint64(i.MemoryBytes), Ncpus: uint32(i.NCPUs), ProjectId: i.ProjectID.String(),
		RunState:            v.RunState,
		TimeCreated:         timestamppb.New(i.TimeCreated),
		TimeModified:        timestamppb.New(i.TimeModified),
		TimeRunStateUpdated: timestamppb.New(i.Runtime.TimeUpdated),
		AutoRestartEnabled:  i.AutoRestartPolicy == model.AutoRestartBestEffort,
		AutoRestartPolicy:   string(i.AutoRestartPolicy),
	}
	if t := i.TimeLastAutoRestarted; t != nil {
		out.TimeLastAutoRestarted = timestamppb.New(*t)
	}
	if v.SledReachability != "" {
		out.SledReachability = proto.String(string(v.SledReachability))
	}
	return out
}
