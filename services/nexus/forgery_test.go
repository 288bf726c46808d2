package nexus_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
	"github.com/rackplane/rackplane/pkg/rackpki/rackpkitest"
	"github.com/rackplane/rackplane/services/nexus/model"
	"github.com/rackplane/rackplane/services/racktest"
	sledconfig "github.com/rackplane/rackplane/services/sledagent/config"
)

// forger is one way an attacker on the host reaches a listener of the
// rack.
type forger struct {
	name string
	dial func(t *testing.T, addr string) *grpc.ClientConn
}

func dialWith(t *testing.T, addr string, opt grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// outsiders are the clients that hold no certificate of the rack: every
// listener inside the rack refuses them in the handshake (S2).
func outsiders(t *testing.T, impersonated rackpki.Identity) []forger {
	foreign := rackpkitest.New(t).Trust(impersonated)
	return []forger{
		{"plaintext", func(t *testing.T, addr string) *grpc.ClientConn {
			return dialWith(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}},
		{"TLS without a certificate", func(t *testing.T, addr string) *grpc.ClientConn {
			return dialWith(t, addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
				InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}))) //nolint:gosec // the attacker's client
		}},
		{"a certificate of another CA naming " + impersonated.String(), func(t *testing.T, addr string) *grpc.ClientConn {
			cfg := foreign.ClientConfig(nil)
			cfg.VerifyConnection = nil // the attacker does not care who answers
			return dialWith(t, addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		}},
	}
}

// member is a client of the rack with a valid certificate naming id, of
// a server of kind.
func member(t *testing.T, id rackpki.Identity, addr string, kind rackpki.Kind) *grpc.ClientConn {
	t.Helper()
	conn, err := grpcconn.Dial(addr, rackpkitest.For(t).Trust(id), rackpki.Identity{Kind: kind}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// everyMethod calls every method of a service with an empty request (an
// empty message decodes as any request) and returns each one's code.
func everyMethod(conn *grpc.ClientConn, desc grpc.ServiceDesc) map[string]codes.Code {
	out := map[string]codes.Code{}
	for _, m := range desc.Methods {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := conn.Invoke(callCtx, "/"+desc.ServiceName+"/"+m.MethodName, &emptypb.Empty{}, &emptypb.Empty{})
		cancel()
		out[m.MethodName] = status.Code(err)
	}
	return out
}

// rackState is what a forged call must not change: the sleds nexus knows
// and where, the instance and its VMM as the database has them, and the
// VMMs the sled runs.
type rackState struct {
	sleds    []string
	instance model.InstanceState
	vmm      model.VMMRuntime
	onSled   []string
}

func readRackState(t *testing.T, r *racktest.InProcess, inst model.Instance, vmm model.VMM) rackState {
	t.Helper()
	var s rackState
	sleds, err := r.DataStore().SledList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sl := range sleds {
		s.sleds = append(s.sleds, sl.ID.String()+"@"+sl.Address)
	}
	slices.Sort(s.sleds)
	gotInst, err := r.DataStore().InstanceGet(ctx, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	gotVMM, err := r.DataStore().VMMGet(ctx, vmm.ID)
	if err != nil {
		t.Fatal(err)
	}
	s.instance, s.vmm = gotInst.Runtime.State, gotVMM.Runtime
	s.vmm.TimeUpdated = time.Time{}
	for _, sled := range r.Agents() {
		for _, v := range sled.Inventory().GetVmms() {
			s.onSled = append(s.onSled, sled.Config.SledID+"/"+v.GetVmmId()+"/"+v.GetRuntime().GetState().String())
		}
	}
	slices.Sort(s.onSled)
	return s
}

// S2, S3, S4: whoever is not the rack, or is the rack but not the one the
// call is about, is refused at every listener inside the rack, for every
// call, and nothing changes: not the sleds nexus knows, not the running
// instance's records, not what the sleds run. Before S2 the forged
// DESTROYED report, the fake sled and the sled re-registered elsewhere
// were all accepted (issue 14).
func TestS2_S3_S4_ForgedCallsAreRefusedAndChangeNothing(t *testing.T) {
	for _, backend := range racktest.Backends {
		t.Run(string(backend), func(t *testing.T) {
			r := racktest.StartInProcess(t, racktest.Options{Backend: backend, Sleds: 2})
			inst, vmm := runningInstance(t, r.Server(), r.Client(racktest.FleetAdmin).SDK(t))
			var home, other = r.Agents()[0], r.Agents()[1]
			if home.Config.SledID != vmm.SledID.String() {
				home, other = other, home
			}
			homeID := rackpki.Identity{Kind: rackpki.Sled, ID: home.Config.SledID}
			otherID := rackpki.Identity{Kind: rackpki.Sled, ID: other.Config.SledID}
			before := readRackState(t, r, inst, vmm)
			nexusAddr := r.Nexus(0).InternalAddr()

			// What a forger says to nexus about the home sled: a new
			// address, a heartbeat, its VMM destroyed far in the future;
			// and a sled nobody set up.
			internalCalls := func(conn *grpc.ClientConn, reportAs string) map[string]error {
				c := nexusv1.NewNexusInternalClient(conn)
				out := map[string]error{}
				_, out["RegisterSled (home sled, new address)"] = c.RegisterSled(ctx, &nexusv1.RegisterSledRequest{
					SledId: home.Config.SledID, Address: "127.0.0.1:1", Ncpus: 64, MemoryBytes: 1 << 40, Zpools: home.Config.Zpools})
				_, out["RegisterSled (a new sled)"] = c.RegisterSled(ctx, &nexusv1.RegisterSledRequest{
					SledId: uuid.NewString(), Address: "127.0.0.1:2", Ncpus: 1024, MemoryBytes: 1 << 50,
					Zpools: []string{"oxp_" + uuid.NewString()}})
				_, out["SledHeartbeat"] = c.SledHeartbeat(ctx, &nexusv1.SledHeartbeatRequest{SledId: home.Config.SledID})
				_, out["VmmStateUpdate"] = c.VmmStateUpdate(ctx, &nexusv1.VmmStateUpdateRequest{SledId: reportAs,
					VmmId: vmm.ID.String(), Runtime: &sledagentv1.VmmRuntime{State: sledagentv1.VmmState_VMM_STATE_DESTROYED,
						Generation: 1_000_000, TimeUpdated: timestamppb.Now()}})
				return out
			}
			refusedEverywhere := func(who string, conn func(addr string) *grpc.ClientConn, want ...codes.Code) {
				t.Helper()
				for call, err := range internalCalls(conn(nexusAddr), home.Config.SledID) {
					if !slices.Contains(want, status.Code(err)) {
						t.Errorf("%s → nexus %s: %v, want one of %v", who, call, err, want)
					}
				}
				for _, desc := range []grpc.ServiceDesc{sledagentv1.SledAgent_ServiceDesc, sledagentv1.SledAgentSim_ServiceDesc} {
					for method, code := range everyMethod(conn(home.Server.Addr()), desc) {
						if !slices.Contains(want, code) {
							t.Errorf("%s → sled %s/%s: %s, want one of %v", who, desc.ServiceName, method, code, want)
						}
					}
				}
			}

			// S2: no certificate, or one of another CA, even naming the
			// home sled: the handshake refuses them on both listeners.
			for _, f := range outsiders(t, homeID) {
				refusedEverywhere(f.name, func(addr string) *grpc.ClientConn { return f.dial(t, addr) }, codes.Unavailable)
			}

			// S3: the other sled's valid certificate speaks for it alone.
			otherConn := member(t, otherID, nexusAddr, rackpki.Nexus)
			for call, err := range internalCalls(otherConn, home.Config.SledID) {
				if status.Code(err) != codes.PermissionDenied {
					t.Errorf("the other sled → nexus %s about the home sled: %v, want PERMISSION_DENIED", call, err)
				}
			}
			// ...and may report only VMMs placed on it, even in its own
			// name.
			if _, err := nexusv1.NewNexusInternalClient(otherConn).VmmStateUpdate(ctx, &nexusv1.VmmStateUpdateRequest{
				SledId: other.Config.SledID, VmmId: vmm.ID.String(), Runtime: &sledagentv1.VmmRuntime{
					State: sledagentv1.VmmState_VMM_STATE_DESTROYED, Generation: 1_000_000, TimeUpdated: timestamppb.Now()}}); status.Code(err) != codes.PermissionDenied {
				t.Errorf("the other sled reporting the home sled's VMM in its own name: %v, want PERMISSION_DENIED", err)
			}
			// S4: a sled (or anyone but a replica or the operator) may not
			// drive another sled, nor inject its faults; a replica may
			// drive it but not inject faults; nobody but sleds speak
			// NexusInternal.
			for _, c := range []struct {
				who     rackpki.Identity
				desc    grpc.ServiceDesc
				refused bool
			}{
				{otherID, sledagentv1.SledAgent_ServiceDesc, true},
				{otherID, sledagentv1.SledAgentSim_ServiceDesc, true},
				{rackpki.Identity{Kind: rackpki.Nexus, ID: r.Nexus(0).ID().String()}, sledagentv1.SledAgentSim_ServiceDesc, true},
			} {
				for method, code := range everyMethod(member(t, c.who, home.Server.Addr(), rackpki.Sled), c.desc) {
					if code != codes.PermissionDenied {
						t.Errorf("%s → sled %s/%s: %s, want PERMISSION_DENIED", c.who, c.desc.ServiceName, method, code)
					}
				}
			}
			for _, who := range []rackpki.Identity{{Kind: rackpki.Operator, ID: "test"}, {Kind: rackpki.Nexus, ID: uuid.NewString()}} {
				for call, err := range internalCalls(member(t, who, nexusAddr, rackpki.Nexus), home.Config.SledID) {
					if status.Code(err) != codes.PermissionDenied {
						t.Errorf("%s → nexus %s: %v, want PERMISSION_DENIED", who, call, err)
					}
				}
			}

			if after := readRackState(t, r, inst, vmm); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("forged calls changed the rack:\nbefore %+v\nafter  %+v", before, after)
			}
			// The home sled's own certificate is still heard: the refusals
			// were about who called, not about the calls.
			if _, err := nexusv1.NewNexusInternalClient(member(t, homeID, nexusAddr, rackpki.Nexus)).SledHeartbeat(ctx,
				&nexusv1.SledHeartbeatRequest{SledId: home.Config.SledID}); err != nil {
				t.Fatalf("the home sled's own heartbeat: %v", err)
			}
		})
	}
}

// S4: with fault injection off (any real rack), SledAgentSim does not
// exist on a sled-agent, even for the operator.
func TestS4_SledAgentSimIsNotServedWithoutFaultInjection(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Sleds: 1,
		SledConfig: racktest.EverySled(func(c *sledconfig.Config) { c.FaultInjection = false })})
	a := r.Agents()[0]
	codesByMethod := everyMethod(member(t, rackpki.Identity{Kind: rackpki.Operator, ID: "test"}, a.Server.Addr(), rackpki.Sled),
		sledagentv1.SledAgentSim_ServiceDesc)
	for method, code := range codesByMethod {
		if code != codes.Unimplemented {
			t.Errorf("SledAgentSim/%s without fault injection: %s, want UNIMPLEMENTED (not served)", method, code)
		}
	}
	if inv := a.Inventory(); !strings.EqualFold(inv.GetSledId(), a.Config.SledID) {
		t.Fatalf("the operator's SledAgent calls still work: inventory of %q", inv.GetSledId())
	}
}
