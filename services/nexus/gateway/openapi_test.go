package gateway

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// N15: the served document is valid OpenAPI 3 and says what the gateway
// does: each operation's success status is the gateway's own (204 with no
// body), every error is Oxide's envelope, and no 64-bit integer is a
// string.
func TestN15_TheServedDocumentIsOpenAPI3AndSaysWhatTheGatewayAnswers(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q: %v", doc.OpenAPI, err)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			name := method + " " + path
			want := http.StatusOK
			if service, rpc, ok := strings.Cut(op.OperationID, "_"); ok {
				want = SuccessStatus("/omicron.nexus.v1." + service + "/" + rpc)
			}
			success := op.Responses.Value(strconv.Itoa(want))
			if success == nil || op.Responses.Len() != 3 {
				t.Errorf("%s: responses %v, want %d, 4XX and 5XX", name, op.Responses.Keys(), want)
				continue
			}
			if (want == http.StatusNoContent) != (len(success.Value.Content) == 0) {
				t.Errorf("%s: %d with content %v", name, want, success.Value.Content)
			}
			for _, class := range []string{"4XX", "5XX"} {
				if r := op.Responses.Value(class); r == nil || r.Ref != "#/components/responses/Error" {
					t.Errorf("%s: %s is not Oxide's error envelope", name, class)
				}
			}
		}
	}
	for name, s := range doc.Components.Schemas {
		for field, p := range s.Value.Properties {
			if f := p.Value.Format; (f == "int64" || f == "uint64") && !p.Value.Type.Is(openapi3.TypeInteger) {
				t.Errorf("%s.%s: a %s as %v", name, field, f, p.Value.Type)
			}
		}
	}
	if e := doc.Components.Schemas["Error"]; e == nil || e.Value.Properties["request_id"] == nil {
		t.Fatal("no Error schema of Oxide's envelope")
	}
}
