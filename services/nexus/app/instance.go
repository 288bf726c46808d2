package app

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/datastore"
	"github.com/rackplane/rackplane/services/nexus/sagas"
	"github.com/rackplane/rackplane/services/nexus/sledclient"
)

// Oxide's limits on an instance's size (SPEC N9 bad input).
const (
	minCPUs   = 1
	maxCPUs   = 254
	gib       = int64(1) << 30
	maxMemory = 1536 * gib // 1.5 TiB
)

var hostnamePattern = regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// InstanceView is an instance as users see it: its record plus the state
// computed from its VMMs (N4).
type InstanceView struct {
	Instance datastore.Instance
	RunState string
}

// RunState computes an instance's external state (N4); it is never stored.
func RunState(inst datastore.Instance, active *datastore.VMM) string {
	switch inst.Runtime.State {
	case datastore.InstanceNoVMM:
		return "stopped"
	case datastore.InstanceFailed:
		return "failed"
	case datastore.InstanceCreating:
		return "creating"
	case datastore.InstanceDestroyed:
		return "destroyed"
	}
	if inst.Runtime.MigrationID != nil {
		return "migrating"
	}
	if active == nil {
		return "starting"
	}
	stopRequested := inst.IntendedState == datastore.IntendStopped
	switch active.Runtime.State {
	case datastore.VMMCreating, datastore.VMMStarting, datastore.VMMRunning, datastore.VMMRebooting:
		if stopRequested {
			// The sled took the stop but its VMM has not reported stopping
			// yet: say what is happening rather than what was.
			return "stopping"
		}
	}
	switch active.Runtime.State {
	case datastore.VMMCreating, datastore.VMMStarting:
		return "starting"
	case datastore.VMMRunning:
		return "running"
	case datastore.VMMRebooting:
		return "rebooting"
	case datastore.VMMMigrating:
		// The instance records no migration (that returned above): the
		// one its VMM last reported is over, ended by an update or a
		// force-terminate before the sled said so, and the guest runs on
		// here (F1).
		return "running"
	case datastore.VMMSagaUnwound:
		return "failed"
	}
	// stopping, stopped, destroyed or failed: stopping until an update saga
	// unlinks the VMM.
	return "stopping"
}

func (n *Nexus) view(ctx context.Context, inst datastore.Instance) (InstanceView, error) {
	var active *datastore.VMM
	if id := inst.Runtime.ActiveVMM; id != nil {
		v, err := n.ds.VMMGet(ctx, *id)
		if err != nil {
			return InstanceView{}, err
		}
		active = &v
	}
	return InstanceView{Instance: inst, RunState: RunState(inst, active)}, nil
}

// lookupInstance resolves {instance} (a name with ?project=, or an id)
// and checks the caller holds at least role on its project.
func (n *Nexus) lookupInstance(ctx context.Context, instance, project string, role authz.Role, what string) (datastore.Instance, error) {
	var v apierror.Violations
	var inst datastore.Instance
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
		var p datastore.Project
		if p, err = n.Project(ctx, project); err != nil {
			return inst, err
		}
		inst, err = n.ds.InstanceLookup(ctx, p.ID, instance)
	}
	if err != nil {
		return inst, err
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
		v.Add("hostname", "%q is not a hostname: 1-63 letters, digits and '-', starting with a letter", params.GetHostname())
	}
	if c := params.GetNcpus(); c < minCPUs || c > maxCPUs {
		v.Add("ncpus", "must be between %d and %d, got %d", minCPUs, maxCPUs, c)
	}
	mem := params.GetMemory()
	switch {
	case mem < uint64(gib) || mem > uint64(maxMemory):
		v.Add("memory", "must be between 1 GiB and 1.5 TiB, got %d bytes", mem)
	case mem%uint64(gib) != 0:
		v.Add("memory", "must be a whole number of GiB, got %d bytes", mem)
	}
	policy := datastore.AutoRestartBestEffort
	switch params.GetAutoRestartPolicy() {
	case "", "best_effort":
	case "never":
		policy = datastore.AutoRestartNever
	default:
		v.Add("auto_restart_policy", "%q is not never or best_effort", params.GetAutoRestartPolicy())
	}
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
	intended := datastore.IntendStopped
	if start {
		intended = datastore.IntendRunning
	}
	now := time.Now()
	inst := datastore.Instance{ID: uuid.New(), ProjectID: p.ID, Name: params.GetName(), Description: params.GetDescription(),
		Hostname: params.GetHostname(), NCPUs: int64(params.GetNcpus()), MemoryBytes: int64(mem),
		Runtime:       datastore.InstanceRuntime{State: datastore.InstanceNoVMM, Generation: 1, TimeUpdated: now},
		IntendedState: intended, AutoRestartPolicy: policy, TimeCreated: now}
	if err := n.ds.InstanceCreate(ctx, inst); err != nil {
		return InstanceView{}, err
	}
	if start {
		return n.runStart(ctx, inst.ID)
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

// InstanceList lists a project's instances by name, a page at a time.
func (n *Nexus) InstanceList(ctx context.Context, req *nexusv1.InstanceListRequest) ([]InstanceView, *string, error) {
	var v apierror.Violations
	pg := parsePage(&v, req.GetLimit(), req.GetPageToken(), req.GetSortBy(), "name_ascending")
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
	items, err := n.ds.InstanceList(ctx, p.ID, pg.after, pg.limit)
	if err != nil || len(items) == 0 {
		return nil, nil, err
	}
	views := make([]InstanceView, 0, len(items))
	for _, inst := range items {
		view, err := n.view(ctx, inst)
		if err != nil {
			return nil, nil, err
		}
		views = append(views, view)
	}
	return views, pg.next(len(items), items[len(items)-1].Name), nil
}

// InstanceStart starts a stopped or failed instance; starting one that
// already has a VMM changes nothing.
func (n *Nexus) InstanceStart(ctx context.Context, instance, project string) (InstanceView, error) {
	inst, err := n.lookupInstance(ctx, instance, project, authz.RoleCollaborator, "start")
	if err != nil {
		return InstanceView{}, err
	}
	if inst.Runtime.State == datastore.InstanceVMM {
		return n.view(ctx, inst)
	}
	if err := n.ds.InstanceSetIntendedState(ctx, inst.ID, datastore.IntendRunning, time.Now()); err != nil {
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
	if err := n.ds.InstanceSetIntendedState(ctx, inst.ID, datastore.IntendStopped, time.Now()); err != nil {
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
	case datastore.InstanceFailed:
		return n.settleFailedAsStopped(ctx, inst.ID)
	case datastore.InstanceVMM:
		if inst.Runtime.MigrationID != nil {
			// A migrating VMM cannot be stopped, and the guest may be about
			// to move: the update that resolves the migration stops
			// whichever VMM it ends up on (N6).
			break
		}
		if err := n.tellActiveVMM(ctx, inst, sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED); err != nil {
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
	if inst.Runtime.State != datastore.InstanceVMM {
		return InstanceView{}, fmt.Errorf("%w: it is %s", sagas.ErrInstanceBusy, inst.Runtime.State)
	}
	if err := n.tellActiveVMM(ctx, inst, sledagentv1.VmmTargetState_VMM_TARGET_STATE_REBOOT); err != nil {
		return InstanceView{}, err
	}
	return n.instanceView(ctx, inst.ID)
}

// settleFailedAsStopped is stop's database-only move of a failed instance.
func (n *Nexus) settleFailedAsStopped(ctx context.Context, id uuid.UUID) (InstanceView, error) {
	for attempt := 0; attempt < 8; attempt++ {
		inst, err := n.ds.InstanceGet(ctx, id)
		if err != nil {
			return InstanceView{}, err
		}
		if inst.Runtime.State != datastore.InstanceFailed {
			return n.view(ctx, inst)
		}
		wrote, err := n.ds.InstanceUpdateRuntime(ctx, id, datastore.InstanceRuntime{State: datastore.InstanceNoVMM,
			Generation: inst.Runtime.Generation + 1, TimeUpdated: time.Now()})
		if err != nil {
			return InstanceView{}, err
		}
		if wrote {
			return n.instanceView(ctx, id)
		}
	}
	return InstanceView{}, fmt.Errorf("%w: it kept changing", sagas.ErrInstanceBusy)
}

// tellActiveVMM sends a target state to the instance's active VMM. When the
// sled-agent answers NO_SUCH_VMM, the VMM is marked failed, only if its
// generation is still the one read before the call, and the caller gets 503:
// the instance is failed and will say so once its update saga has run.
func (n *Nexus) tellActiveVMM(ctx context.Context, inst datastore.Instance, target sledagentv1.VmmTargetState) error {
	vmm, err := n.ds.VMMGet(ctx, *inst.Runtime.ActiveVMM)
	if err != nil {
		return err
	}
	if vmm.Runtime.State == datastore.VMMCreating {
		// Its start saga has not registered it yet, so its sled rightly
		// does not know it: that is not "gone". A stop is left to the saga,
		// which looks at the wish once the VMM runs; a reboot must wait.
		if target == sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED {
			return nil
		}
		return fmt.Errorf("%w: it is still starting", sagas.ErrInstanceBusy)
	}
	client, err := n.sleds.Client(ctx, vmm.SledID)
	if err != nil {
		return err
	}
	resp, err := client.EnsureState(ctx, &sledagentv1.EnsureStateRequest{VmmId: vmm.ID.String(), Target: target})
	err = sledclient.Classify(vmm.SledID, err)
	if errors.Is(err, sledclient.ErrVMMGone) {
		outcome, markErr := n.ds.VMMMarkFailed(ctx, vmm, "no_such_vmm", time.Now())
		if markErr != nil {
			return markErr
		}
		switch outcome {
		case datastore.MarkWritten:
			n.log.Warn("sled-agent no longer knows the VMM; marked it failed", zap.Stringer("vmm_id", vmm.ID),
				zap.Stringer("instance_id", inst.ID))
			n.UpdateInstanceInBackground(inst.ID)
		case datastore.MarkStale:
			// It moved on meanwhile (a racing stop destroyed it): that is
			// not a failure, and nothing is left to update here.
		}
		return err
	}
	if err != nil {
		return err
	}
	runtime, err := sledclient.Runtime(resp.GetRuntime())
	if err != nil {
		return err
	}
	wrote, err := n.ds.VMMUpdateRuntime(ctx, vmm.ID, runtime)
	if wrote && runtime.State.Terminal() {
		// The VMM had already ended and this answer recorded it before its
		// publication did, which now changes nothing and updates nothing:
		// the update is started here instead (N6).
		n.UpdateInstanceInBackground(inst.ID)
	}
	return err
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
