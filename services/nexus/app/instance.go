package app

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/nexus/sagas"
)

// Oxide's limits on an instance's size (SPEC N9 bad input).
const (
	minCPUs   = 1
	maxCPUs   = 254
	gib       = int64(1) << 30
	maxMemory = 1536 * gib // 1.5 TiB
)

// hostnamePattern is one label of Oxide's Hostname rule (letters, digits
// and '-', starting with a letter or a digit, not ending with '-'), of at
// most 63 characters: what a sled-agent gives its guest. Oxide also takes
// dot-separated labels, up to 253 characters (README: differences).
var hostnamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// InstanceView is an instance as users see it: its record plus the state
// computed from its VMMs (N4).
type InstanceView struct {
	Instance model.Instance
	RunState string
	// SledReachability is that of the sled of its active VMM; empty
	// when it has none, or when the view did not look.
	SledReachability model.SledReachability
	// ActiveSled is the sled of its active VMM; nil when it has none, or
	// when the view did not look.
	ActiveSled *uuid.UUID
}

// viewOf is the view of an instance read with its VMMs.
func viewOf(s model.InstanceSnapshot) InstanceView {
	return InstanceView{Instance: s.Instance, RunState: s.RunState()}
}

func (n *Nexus) view(ctx context.Context, inst model.Instance) (InstanceView, error) {
	views, err := n.views(ctx, []model.Instance{inst})
	if err != nil {
		return InstanceView{}, err
	}
	return views[0], nil
}

// views reads the active VMMs of instances, and when their sleds last
// heartbeated, in two statements whatever the number of instances.
func (n *Nexus) views(ctx context.Context, insts []model.Instance) ([]InstanceView, error) {
	var vmmIDs []uuid.UUID
	for _, inst := range insts {
		if id := inst.Runtime.ActiveVMM; id != nil {
			vmmIDs = append(vmmIDs, *id)
		}
	}
	vmms, err := n.ds.VMMsGet(ctx, vmmIDs)
	if err != nil {
		return nil, err
	}
	byID := make(map[uuid.UUID]*model.VMM, len(vmms))
	sledIDs := make([]uuid.UUID, 0, len(vmms))
	for i := range vmms {
		byID[vmms[i].ID] = &vmms[i]
		sledIDs = append(sledIDs, vmms[i].SledID)
	}
	lastSeen, err := n.ds.SledsLastSeen(ctx, sledIDs)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	views := make([]InstanceView, len(insts))
	for i, inst := range insts {
		var active *model.VMM
		if id := inst.Runtime.ActiveVMM; id != nil {
			if active = byID[*id]; active == nil {
				return nil, fmt.Errorf("%w: vmm %s of instance %s", model.ErrNotFound, *id, inst.ID)
			}
		}
		views[i] = InstanceView{Instance: inst, RunState: model.RunState(inst, active)}
		if active != nil {
			views[i].SledReachability = model.ReachabilitySince(lastSeen[active.SledID], now, n.sledHeartbeatTimeout)
			views[i].ActiveSled = &active.SledID
		}
	}
	return views, nil
}

// lookupInstance resolves {instance} (a name with ?project=, or an id)
// and checks the caller holds at least role on its project.
func (n *Nexus) lookupInstance(ctx context.Context, instance, project string, role authz.Role, what string) (model.Instance, error) {
	var v apierror.Violations
	var inst model.Instance
	var err error
	if isUUID(instance) {
		if project != "" {
			v.Add("project", "must not be given when the instance is named by its id")
			return inst, v.Err()
		}
		inst, err = n.ds.InstanceGet(ctx, uuid.MustParse(instance))
	} else {
		checkName(&v, "instance", instance)
		if project == "" {
			v.Add("project", "is required when the instance is named by its name")
		}
		if err := v.Err(); err != nil {
			return inst, err
		}
		var p model.Project
		if p, err = n.Project(ctx, project); err != nil {
			return inst, err
		}
		inst, err = n.ds.InstanceLookup(ctx, p.ID, instance)
	}
	if err != nil {
		return inst, err
	}
	if !authz.CanReadProject(ctx, inst.ProjectID) {
		// Whoever may not see the project learns nothing of its
		// instances, not even that this id is one.
		return model.Instance{}, fmt.Errorf("%w: instance %s", model.ErrNotFound, instance)
	}
	if err := authz.RequireProjectRole(ctx, inst.ProjectID, role, what+" instance "+inst.Name); err != nil {
		return inst, err
	}
	return inst, nil
}

// InstanceCreate validates and creates an instance, and starts it unless
// told not to (N7).
func (n *Nexus) InstanceCreate(ctx context.Context, project string, params *nexusv1.InstanceCreateParams) (InstanceView, error) {
	var v apierror.Violations
	var ref nameOrID
	if project == "" {
		v.Add("project", "is required")
	} else {
		ref = parseNameOrID(&v, "project", project)
	}
	if params == nil {
		v.Add("body", "is required")
		return InstanceView{}, v.Err()
	}
	checkName(&v, "name", params.GetName())
	checkDescription(&v, "description", params.GetDescription())
	if !hostnamePattern.MatchString(params.GetHostname()) {
		v.Add("hostname", "%q is not a hostname here: one label of 1-63 letters, digits and '-', not starting or ending with '-'", params.GetHostname())
	}
	checkShape(&v, params.GetNcpus(), params.GetMemory())
	policy := parseAutoRestartPolicy(&v, params.GetAutoRestartPolicy())
	if err := v.Err(); err != nil {
		return InstanceView{}, err
	}
	p, err := n.lookupProject(ctx, ref)
	if err != nil {
		return InstanceView{}, err
	}
	if err := authz.RequireProjectRole(ctx, p.ID, authz.RoleCollaborator, "create instances in "+p.Name); err != nil {
		return InstanceView{}, err
	}
	start := params.Start == nil || params.GetStart()
	intended := model.IntendStopped
	if start {
		intended = model.IntendRunning
	}
	now := time.Now()
	inst := model.Instance{ID: uuid.New(), ProjectID: p.ID, Name: params.GetName(), Description: params.GetDescription(),
		Hostname: params.GetHostname(), NCPUs: int64(params.GetNcpus()), MemoryBytes: int64(params.GetMemory()),
		Runtime:       model.InstanceRuntime{State: model.InstanceNoVMM, Generation: 1, TimeUpdated: now},
		IntendedState: intended, AutoRestartPolicy: policy, TimeCreated: now}
	if !start {
		if err := n.ds.InstanceCreate(ctx, inst); err != nil {
			return InstanceView{}, err
		}
		return n.instanceView(ctx, inst.ID)
	}
	// One saga, so that a create that cannot start leaves nothing behind
	// (SPEC 7): the name stays free for a retry.
	inst.Runtime.State = model.InstanceCreating
	if _, err := n.sagas.Run(ctx, sagas.InstanceCreate,
		sagas.InstanceStartParams{Instance: inst.ID, VMM: uuid.New(), Create: &inst}); err != nil {
		return InstanceView{}, err
	}
	return n.instanceView(ctx, inst.ID)
}

func (n *Nexus) instanceView(ctx context.Context, id uuid.UUID) (InstanceView, error) {
	inst, err := n.ds.InstanceGet(ctx, id)
	if err != nil {
		return InstanceView{}, err
	}
	return n.view(ctx, inst)
}

// Instance returns an instance the caller may read.
func (n *Nexus) Instance(ctx context.Context, instance, project string) (InstanceView, error) {
	inst, err := n.lookupInstance(ctx, instance, project, authz.RoleViewer, "view")
	if err != nil {
		return InstanceView{}, err
	}
	return n.view(ctx, inst)
}

// InstanceList lists a project's instances a page at a time, in one of
// Oxide's sort modes (by name by default).
func (n *Nexus) InstanceList(ctx context.Context, req *nexusv1.InstanceListRequest) ([]InstanceView, *string, error) {
	var v apierror.Violations
	if req.GetProject() == "" {
		v.Add("project", "is required")
	}
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	p, err := n.Project(ctx, req.GetProject())
	if err != nil {
		return nil, nil, err
	}
	pg := parsePage(&v, "instances/"+p.ID.String(), req.GetLimit(), req.GetPageToken(), req.GetSortBy(), nameOrIDSorts...)
	if err := v.Err(); err != nil {
		return nil, nil, err
	}
	items, err := n.ds.InstanceList(ctx, p.ID, pg.order(), pg.after, pg.limit)
	if err != nil || len(items) == 0 {
		return nil, nil, err
	}
	views, err := n.views(ctx, items)
	if err != nil {
		return nil, nil, err
	}
	last := items[len(items)-1]
	return views, pg.next(len(items), pg.key(last.Name, last.ID)), nil
}

// InstanceStart starts a stopped or failed instance; starting one that
// already has a VMM changes nothing.
func (n *Nexus) InstanceStart(ctx context.Context, instance, project string) (InstanceView, error) {
	inst, err := n.lookupInstance(ctx, instance, project, authz.RoleCollaborator, "start")
	if err != nil {
		return InstanceView{}, err
	}
	if inst.Runtime.State == model.InstanceVMM {
		return n.view(ctx, inst)
	}
	if err := n.ds.InstanceSetIntendedState(ctx, inst.ID, model.IntendRunning, time.Now()); err != nil {
		return InstanceView{}, err
	}
	return n.runStart(ctx, inst.ID)
}

// runStart runs the start saga to completion and returns the instance.
func (n *Nexus) runStart(ctx context.Context, id uuid.UUID) (InstanceView, error) {
	if _, err := n.sagas.Run(ctx, sagas.InstanceStart, sagas.InstanceStartParams{Instance: id, VMM: uuid.New()}); err != nil {
		return InstanceView{}, err
	}
	return n.instanceView(ctx, id)
}

// InstanceStop records that the user wants the instance stopped, then asks
// its VMM to stop (N7). A failed instance moves to stopped in the database
// alone; a stopped one is left as it is.
func (n *Nexus) InstanceStop(ctx context.Context, instance, project string) (InstanceView, error) {
	inst, err := n.lookupInstance(ctx, instance, project, authz.RoleCollaborator, "stop")
	if err != nil {
		return InstanceView{}, err
	}
	if err := n.ds.InstanceSetIntendedState(ctx, inst.ID, model.IntendStopped, time.Now()); err != nil {
		return InstanceView{}, err
	}
	// Act on the instance as it is now that the wish is recorded: a start
	// saga that linked its VMM before the wish was written is told to stop
	// here; one that links it later sees the wish itself (ensure_running's
	// last look), so a stop racing a start is never lost.
	if inst, err = n.ds.InstanceGet(ctx, inst.ID); err != nil {
		return InstanceView{}, err
	}
	switch inst.Runtime.State {
	case model.InstanceFailed:
		return n.settleFailedAsStopped(ctx, inst.ID)
	case model.InstanceVMM:
		if inst.Runtime.MigrationID != nil {
			// A migrating VMM cannot be stopped, and the guest may be about
			// to move: the update that resolves the migration stops
			// whichever VMM it ends up on (N6).
			break
		}
		if err := n.tellActiveVMM(ctx, inst, model.TargetStopped); err != nil {
			return InstanceView{}, err
		}
	}
	return n.instanceView(ctx, inst.ID)
}

// InstanceReboot asks a running instance's VMM to reboot.
func (n *Nexus) InstanceReboot(ctx context.Context, instance, project string) (InstanceView, error) {
	inst, err := n.lookupInstance(ctx, instance, project, authz.RoleCollaborator, "reboot")
	if err != nil {
		return InstanceView{}, err
	}
	if inst.Runtime.State != model.InstanceVMM {
		return InstanceView{}, fmt.Errorf("%w: it is %s", model.ErrInstanceBusy, inst.Runtime.State)
	}
	if err := n.tellActiveVMM(ctx, inst, model.TargetReboot); err != nil {
		return InstanceView{}, err
	}
	return n.instanceView(ctx, inst.ID)
}

// settleFailedAsStopped is stop's database-only move of a failed instance.
func (n *Nexus) settleFailedAsStopped(ctx context.Context, id uuid.UUID) (InstanceView, error) {
	inst, err := n.ds.InstanceRewrite(ctx, id, func(inst model.Instance) (model.InstanceRuntime, bool, error) {
		if inst.Runtime.State != model.InstanceFailed {
			return inst.Runtime, false, nil
		}
		next := inst.Runtime.Next(time.Now())
		next.State, next.ActiveVMM, next.TargetVMM, next.MigrationID = model.InstanceNoVMM, nil, nil, nil
		return next, true, nil
	})
	if err != nil {
		return InstanceView{}, err
	}
	return n.view(ctx, inst)
}

// tellActiveVMM sends a target state to the instance's active VMM. When the
// sled-agent answers NO_SUCH_VMM, the VMM is marked failed, only if its
// generation is still the one read before the call, and the caller gets 503:
// the instance is failed and will say so once its update saga has run.
func (n *Nexus) tellActiveVMM(ctx context.Context, inst model.Instance, target model.VMMTarget) error {
	vmm, err := n.ds.VMMGet(ctx, *inst.Runtime.ActiveVMM)
	if err != nil {
		return err
	}
	if vmm.Runtime.State.Terminal() {
		// Its end is recorded; the update that unlinks it has not run yet.
		// Its sled rightly no longer knows it, which is no failure: a stop
		// has nothing to ask, and the update settles the instance (F3, F5).
		if target == model.TargetStopped {
			n.UpdateInstanceInBackground(inst.ID)
			return nil
		}
		return fmt.Errorf("%w: its VMM has ended (%s)", model.ErrInstanceBusy, vmm.Runtime.State)
	}
	if vmm.Runtime.State == model.VMMCreating {
		// Its start saga has not registered it yet, so its sled rightly
		// does not know it: that is not "gone". A stop is left to the saga,
		// which looks at the wish once the VMM runs; a reboot must wait.
		if target == model.TargetStopped {
			return nil
		}
		return fmt.Errorf("%w: it is still starting", model.ErrInstanceBusy)
	}
	runtime, err := n.sleds.EnsureState(ctx, vmm.SledID, vmm.ID, target)
	if errors.Is(err, model.ErrVMMGone) {
		if markErr := n.markForgotten(ctx, vmm, "sled-agent no longer knows the VMM; marked it failed"); markErr != nil {
			return markErr
		}
		return err
	}
	if err != nil {
		return err
	}
	return n.recordAnswer(ctx, vmm, runtime)
}

// markForgotten records that vmm's sled does not know it (F5): failed, only
// if its generation is still the one read, and its instance updated. A VMM
// that moved on meanwhile (a racing stop destroyed it) did not fail, and
// nothing is left to update.
func (n *Nexus) markForgotten(ctx context.Context, vmm model.VMM, why string) error {
	outcome, err := n.ds.VMMMarkFailed(ctx, vmm, model.FailureNoSuchVMM, time.Now())
	if err == nil && outcome == datastore.MarkWritten {
		n.log.Warn(why, zap.Stringer("vmm_id", vmm.ID), zap.Stringer("instance_id", vmm.InstanceID))
		n.UpdateInstanceInBackground(vmm.InstanceID)
	}
	return err
}

// recordAnswer writes a runtime a sled answered about vmm through the
// guard. If it recorded the VMM's end before the sled's own publication
// did, that publication now changes nothing and starts no update (N6): the
// update is started here instead.
func (n *Nexus) recordAnswer(ctx context.Context, vmm model.VMM, rt model.VMMRuntime) error {
	wrote, err := n.ds.VMMUpdateRuntime(ctx, vmm.ID, rt)
	if wrote && rt.State.Terminal() {
		n.UpdateInstanceInBackground(vmm.InstanceID)
	}
	return err
}

// checkShape checks an instance's vCPUs and memory.
func checkShape(v *apierror.Violations, ncpus uint32, memory uint64) {
	if ncpus < minCPUs || ncpus > maxCPUs {
		v.Add("ncpus", "must be between %d and %d, got %d", minCPUs, maxCPUs, ncpus)
	}
	switch {
	case memory < uint64(gib) || memory > uint64(maxMemory):
		v.Add("memory", "must be between 1 GiB and 1.5 TiB, got %d bytes", memory)
	case memory%uint64(gib) != 0:
		v.Add("memory", "must be a whole number of GiB, got %d bytes", memory)
	}
}

// parseAutoRestartPolicy reads an auto-restart policy; empty is the
// default, best_effort (as Oxide's null).
func parseAutoRestartPolicy(v *apierror.Violations, policy string) model.AutoRestartPolicy {
	switch policy {
	case "", "best_effort":
		return model.AutoRestartBestEffort
	case "never":
		return model.AutoRestartNever
	}
	v.Add("auto_restart_policy", "%q is not never or best_effort", policy)
	return ""
}

// InstanceUpdate changes a stopped instance's vCPUs, memory and
// auto-restart policy (N15, Oxide's InstanceUpdate: every field is set).
// The write is guarded by the generation it read and by the instance
// still being stopped with no update under way (N3): a start that began
// meanwhile wins, and the update answers that the instance is not
// stopped; a start that placed the old shape fails its link. ifMatch,
// when given, is the instance's time_modified as the caller read it: the
// update is refused (ErrConflict) if the instance changed since, so that
// a client changing one field does not put back another that someone
// else changed meanwhile.
func (n *Nexus) InstanceUpdate(ctx context.Context, instance, project string, params *nexusv1.InstanceUpdateParams, ifMatch string) (InstanceView, error) {
	var v apierror.Violations
	if params == nil {
		v.Add("body", "is required")
		return InstanceView{}, v.Err()
	}
	checkShape(&v, params.GetNcpus(), params.GetMemory())
	policy := parseAutoRestartPolicy(&v, params.GetAutoRestartPolicy())
	if err := v.Err(); err != nil {
		return InstanceView{}, err
	}
	var read time.Time
	if ifMatch != "" {
		var err error
		if read, err = time.Parse(time.RFC3339Nano, strings.Trim(ifMatch, `"`)); err != nil {
			v.Add("If-Match", "%q is not the instance's time_modified (RFC 3339)", ifMatch)
			return InstanceView{}, v.Err()
		}
	}
	inst, err := n.lookupInstance(ctx, instance, project, authz.RoleCollaborator, "update")
	if err != nil {
		return InstanceView{}, err
	}
	// The guarded write below fails if anything changes after this read.
	if ifMatch != "" && !inst.TimeModified.Equal(read) {
		return InstanceView{}, fmt.Errorf("%w: instance %s changed since it was read (modified at %s, If-Match %s); read it and try again",
			model.ErrConflict, inst.Name, inst.TimeModified.UTC().Format(time.RFC3339Nano), ifMatch)
	}
	if inst.Runtime.State != model.InstanceNoVMM || inst.Runtime.ActiveVMM != nil {
		view, err := n.view(ctx, inst)
		if err != nil {
			return InstanceView{}, err
		}
		return InstanceView{}, fmt.Errorf("%w: instance %s is %s; stop it to change its vCPUs, memory or auto-restart policy",
			model.ErrInstanceNotStopped, inst.Name, view.RunState)
	}
	updated, err := n.ds.InstanceReconfigure(ctx, inst.ID, inst.Runtime.Generation,
		model.InstanceShape{NCPUs: int64(params.GetNcpus()), MemoryBytes: int64(params.GetMemory()), AutoRestartPolicy: policy}, time.Now())
	if err != nil {
		return InstanceView{}, err
	}
	if !updated {
		return InstanceView{}, n.whyNotReconfigured(ctx, inst)
	}
	return n.instanceView(ctx, inst.ID)
}

// whyNotReconfigured says why a stopped instance's guarded update missed:
// an update saga still settling it after a stop (it holds the updater
// lock; retry), a start that won, or another update.
func (n *Nexus) whyNotReconfigured(ctx context.Context, read model.Instance) error {
	now, err := n.ds.InstanceGet(ctx, read.ID)
	switch {
	case err != nil:
		return err
	case now.UpdaterID != nil:
		return fmt.Errorf("%w: instance %s is still being settled by an update; try again", model.ErrUpdateInProgress, read.Name)
	case now.Runtime.State != model.InstanceNoVMM || now.Runtime.ActiveVMM != nil:
		return fmt.Errorf("%w: instance %s is starting; stop it to change its vCPUs, memory or auto-restart policy",
			model.ErrInstanceNotStopped, read.Name)
	}
	return fmt.Errorf("%w: instance %s changed while it was updated; read it and try again", model.ErrConflict, read.Name)
}

// InstanceDelete deletes a stopped or failed instance.
func (n *Nexus) InstanceDelete(ctx context.Context, instance, project string) error {
	inst, err := n.lookupInstance(ctx, instance, project, authz.RoleCollaborator, "delete")
	if err != nil {
		return err
	}
	_, err = n.sagas.Run(ctx, sagas.InstanceDelete, sagas.InstanceDeleteParams{Instance: inst.ID})
	return err
}

// InstanceMigrate moves a running instance to another sled (fleet admin
// only). It returns once the target VMM is pulling the guest; the instance
// is migrating until the sled-agents report the outcome and an update saga
// resolves it (N6).
func (n *Nexus) InstanceMigrate(ctx context.Context, instance, project string, params *nexusv1.InstanceMigrateParams) (InstanceView, error) {
	var v apierror.Violations
	if params == nil {
		v.Add("body", "is required")
		return InstanceView{}, v.Err()
	}
	dst := v.UUID("dst_sled_id", params.GetDstSledId())
	if err := v.Err(); err != nil {
		return InstanceView{}, err
	}
	inst, err := n.lookupInstance(ctx, instance, project, authz.RoleViewer, "migrate")
	if err != nil {
		return InstanceView{}, err
	}
	if err := authz.RequireFleetAdmin(ctx, "migrate instance "+inst.Name); err != nil {
		return InstanceView{}, err
	}
	if _, err := n.ds.SledGet(ctx, dst); err != nil {
		return InstanceView{}, err
	}
	if _, err := n.sagas.Run(ctx, sagas.InstanceMigrate, sagas.InstanceMigrateParams{Instance: inst.ID, DstSled: dst,
		Migration: uuid.New(), TargetVMM: uuid.New()}); err != nil {
		return InstanceView{}, err
	}
	return n.instanceView(ctx, inst.ID)
}
