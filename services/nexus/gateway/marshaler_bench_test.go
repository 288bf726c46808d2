package gateway

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
)

// instancePage is a full page of GET /v1/instances as nexus fills it.
func instancePage() *nexusv1.InstanceListResponse {
	base := time.Date(2025, 3, 14, 9, 26, 53, 589_793_000, time.UTC)
	states := []string{"running", "stopped", "starting", "migrating", "failed"}
	resp := &nexusv1.InstanceListResponse{NextPage: proto.String("eyJsYXN0X25hbWUiOiJ2bS0wOTkifQ")}
	for i := range 100 {
		created := base.Add(time.Duration(i) * time.Minute)
		inst := &nexusv1.Instance{
			Id:                  fmt.Sprintf("6a5c1f7e-0d5c-4d0e-9a3e-%012x", i),
			Name:                fmt.Sprintf("vm-%03d", i),
			Description:         fmt.Sprintf("web tier replica %d of the \"shop\" project", i),
			Hostname:            fmt.Sprintf("vm-%03d", i),
			Memory:              uint64(1+i%16) << 30,
			Ncpus:               uint32(1 + i%8),
			ProjectId:           "0b4c9d2e-7f1a-4e3b-8c5d-6e7f8a9b0c1d",
			RunState:            states[i%len(states)],
			TimeCreated:         timestamppb.New(created),
			TimeModified:        timestamppb.New(created.Add(time.Hour)),
			TimeRunStateUpdated: timestamppb.New(created.Add(2 * time.Hour)),
			AutoRestartEnabled:  i%2 == 0,
			AutoRestartPolicy:   "best_effort",
		}
		if i%5 == 4 {
			inst.TimeLastAutoRestarted = timestamppb.New(created.Add(3 * time.Hour))
			inst.AutoRestartCooldownExpiration = timestamppb.New(created.Add(4 * time.Hour))
		}
		resp.Items = append(resp.Items, inst)
	}
	return resp
}

// BenchmarkOxideJSONMarshal: the two-pass pipeline the writer replaced,
// and the writer, on one page of 100 instances.
func BenchmarkOxideJSONMarshal(b *testing.B) {
	page := instancePage()
	checkMatchesTwoPass(b, page)
	for _, bm := range []struct {
		name    string
		marshal func(any) ([]byte, error)
	}{
		{"two-pass", twoPassMarshal},
		{"one-pass", OxideJSON{}.Marshal},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			var size int
			for b.Loop() {
				out, err := bm.marshal(page)
				if err != nil {
					b.Fatal(err)
				}
				size = len(out)
			}
			b.SetBytes(int64(size))
		})
	}
}
