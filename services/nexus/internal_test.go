package nexus_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
)

func TestMain(m *testing.M) { os.Exit(racktest.Main(m)) }

var ctx = context.Background()

func TestV8_SledAgentRegistersWithNexusAndHeartbeats(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1, SledConfig: racktest.EverySled(explicitSleds)})
			n, a := r.Server(), r.Agents()[0]
			sledID := uuid.MustParse(a.Config.SledID)
			var first time.Time
			testutil.WaitFor(t, 10*time.Second, func() error {
				s, err := n.DataStore().SledGet(ctx, sledID)
				if err != nil {
					return err
				}
				if s.Address != a.Server.Addr() || s.NCPUs != int64(a.Config.NCPUs) {
					return fmt.Errorf("sled row %+v", s)
				}
				first = s.TimeLastSeen
				return nil
			})
			testutil.WaitFor(t, 10*time.Second, func() error {
				s, err := n.DataStore().SledGet(ctx, sledID)
				if err != nil || !s.TimeLastSeen.After(first) {
					return fmt.Errorf("last seen %v not after %v (%v)", s.TimeLastSeen, first, err)
				}
				return nil
			})
		})
	}
}

func TestV5_VMMUpdatesFromASledAreAppliedThroughTheGenerationGuard(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 1, SledConfig: racktest.EverySled(explicitSleds)})
			n, a := r.Server(), r.Agents()[0]
			ds := n.DataStore()
			sledID := uuid.MustParse(a.Config.SledID)
			testutil.WaitFor(t, 10*time.Second, func() error { _, err := ds.SledGet(ctx, sledID); return err })

			// The records a start saga will create; made by hand until it exists.
			now := time.Now()
			project := model.Project{ID: uuid.New(), Name: "p", TimeCreated: now}
			instance := model.Instance{ID: uuid.New(), ProjectID: project.ID, Name: "i", Hostname: "i", NCPUs: 2,
				MemoryBytes: 4 << 30, IntendedState: model.IntendRunning, AutoRestartPolicy: model.AutoRestartNever,
				Runtime: model.InstanceRuntime{State: model.InstanceNoVMM, Generation: 1, TimeUpdated: now}, TimeCreated: now}
			vmm := model.VMM{ID: uuid.New(), InstanceID: instance.ID, SledID: sledID, TimeCreated: now,
				Runtime: model.VMMRuntime{State: model.VMMCreating, Generation: 1, TimeUpdated: now}}
			for _, err := range []error{ds.ProjectCreate(ctx, project), ds.InstanceCreate(ctx, instance), ds.VMMInsert(ctx, vmm)} {
				if err != nil {
					t.Fatal(err)
				}
			}
			waitVMM := func(state model.VMMState, gen uint64) {
				t.Helper()
				testutil.WaitFor(t, 10*time.Second, func() error {
					got, err := ds.VMMGet(ctx, vmm.ID)
					if err != nil || got.Runtime.State != state || got.Runtime.Generation != gen {
						return fmt.Errorf("VMM row %+v (%v), want %s at generation %d", got.Runtime, err, state, gen)
					}
					return nil
				})
			}
			if _, err := a.Client.EnsureRegistered(ctx, &sledagentv1.EnsureRegisteredRequest{
				VmmId: vmm.ID.String(), InstanceId: instance.ID.String(),
				Spec:           &sledagentv1.VmmSpec{Ncpus: 2, MemoryBytes: 4 << 30, Hostname: "i"},
				InitialRuntime: &sledagentv1.VmmRuntime{Generation: 1},
			}); err != nil {
				t.Fatal(err)
			}
			waitVMM(model.VMMStarting, 2)
			a.EnsureState(vmm.ID.String(), sledagentv1.VmmTargetState_VMM_TARGET_STATE_RUNNING)
			a.Step(vmm.ID.String(), false)
			waitVMM(model.VMMRunning, 3)

			// The test speaks as the VMM's sled, with its certificate.
			sledTrust := rackpkitest.For(t).Trust(rackpki.Identity{Kind: rackpki.Sled, ID: vmm.SledID.String()})
			conn, err := grpcconn.Dial(n.InternalAddr(), sledTrust, rackpki.Identity{Kind: rackpki.Nexus}, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			internal := nexusv1.NewNexusInternalClient(conn)
			update := func(id string, state sledagentv1.VmmState, gen uint64) error {
				_, err := internal.VmmStateUpdate(ctx, &nexusv1.VmmStateUpdateRequest{SledId: vmm.SledID.String(), VmmId: id,
					Runtime: &sledagentv1.VmmRuntime{State: state, Generation: gen, TimeUpdated: timestamppb.Now()}})
				return err
			}
			// S3: another sled's report of this VMM, however new, is
			// refused and changes nothing (the forged DESTROYED at
			// generation 1,000,000 that issue 14 ran an instance twice with).
			if _, err := internal.VmmStateUpdate(ctx, &nexusv1.VmmStateUpdateRequest{SledId: uuid.NewString(), VmmId: vmm.ID.String(),
				Runtime: &sledagentv1.VmmRuntime{State: sledagentv1.VmmState_VMM_STATE_DESTROYED, Generation: 1_000_000,
					TimeUpdated: timestamppb.Now()}}); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("another sled's report of the VMM: %v, want PERMISSION_DENIED", err)
			}
			waitVMM(model.VMMRunning, 3)
			// A stale update is accepted and changes nothing, so the sled
			// does not retry it.
			if err := update(vmm.ID.String(), sledagentv1.VmmState_VMM_STATE_DESTROYED, 3); err != nil {
				t.Fatalf("stale update: %v, want OK", err)
			}
			waitVMM(model.VMMRunning, 3)
			if err := update(uuid.NewString(), sledagentv1.VmmState_VMM_STATE_RUNNING, 9); status.Code(err) != codes.NotFound {
				t.Fatalf("update of an unknown VMM: %v, want NOT_FOUND", err)
			}
			_, err = internal.VmmStateUpdate(ctx, &nexusv1.VmmStateUpdateRequest{SledId: vmm.SledID.String(), VmmId: "vmm-7",
				Runtime: &sledagentv1.VmmRuntime{}})
			var fields []string
			for _, v := range apierror.FieldViolations(err) {
				fields = append(fields, v.Field)
			}
			if status.Code(err) != codes.InvalidArgument || len(fields) != 3 {
				t.Fatalf("malformed update: %v (fields %v), want INVALID_ARGUMENT naming vmm_id, runtime.state, runtime.generation", err, fields)
			}

			a.EnsureState(vmm.ID.String(), sledagentv1.VmmTargetState_VMM_TARGET_STATE_STOPPED)
			a.Step(vmm.ID.String(), true)
			waitVMM(model.VMMDestroyed, 6)
			if _, err := ds.VMMGet(ctx, vmm.ID); errors.Is(err, model.ErrNotFound) {
				t.Fatal("a destroyed VMM's record vanished")
			}
		})
	}
}
