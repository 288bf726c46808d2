package gateway

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
)

// requestMessages are the external API's messages a REST body can decode
// into: every message of the service's file.
func requestMessages(t testing.TB) []protoreflect.MessageType {
	msgs := nexusv1.File_omicron_nexus_v1_external_proto.Messages()
	var out []protoreflect.MessageType
	for i := range msgs.Len() {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(msgs.Get(i).FullName())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, mt)
	}
	return out
}

// FuzzRESTBody (S6, SPEC 7): any bytes as any request body of the
// external API decode or are refused with an error, never a panic; what
// is accepted encodes again, and holds no NUL in any string.
func FuzzRESTBody(f *testing.F) {
	for _, body := range []string{
		`{"name": "p", "description": "d"}`,
		`{"name": "vm", "hostname": "vm", "description": "", "memory": 1073741824, "ncpus": 2, "start": true}`,
		`{"dst_sled_id": "6a5c1f7e-0d5c-4d0e-9a3e-1f0c4e0b7a11"}`,
		`{"memory": "1", "ncpus": 1.0, "description": "a\u0000b"}`,
		`{"a": {"b": [1, 2, {"c": null}]}}`, `[]`, `null`, `"x"`, `{"memory": 1e400}`,
	} {
		for i := range 64 {
			f.Add(uint8(i), []byte(body))
		}
	}
	types := requestMessages(f)
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		msg := types[int(which)%len(types)].New().Interface()
		if err := (OxideJSON{}).Unmarshal(data, msg); err != nil {
			return
		}
		out, err := (OxideJSON{}).Marshal(msg)
		if err != nil {
			t.Fatalf("an accepted %s does not encode: %v", msg.ProtoReflect().Descriptor().FullName(), err)
		}
		if strings.Contains(string(out), `\u0000`) {
			t.Fatalf("an accepted %s holds a NUL: %s", msg.ProtoReflect().Descriptor().FullName(), out)
		}
	})
}
