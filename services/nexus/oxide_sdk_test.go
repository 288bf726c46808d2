package nexus_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3gen"
	"github.com/oxidecomputer/oxide.go/oxide"
	"github.com/rackplane/rackplane/services/racktest/openapicheck"
)

// sdkOperations are the operations Oxide's nexus document of omicron
// rel/v20/rc1 shares with this API, by method and path as Oxide names
// them, each with the SDK type its success answer decodes into (nil for
// none) and that answer's status. Oxide's document itself is data this
// repository may not keep (README: Differences from Oxide's API), while
// the Oxide Go SDK v0.10.0 is a pinned module generated from it, so the
// SDK's types stand for its schemas wherever the document is not at hand.
var sdkOperations = []struct {
	method, path string
	status       int
	answer       any
}{
	{http.MethodGet, "/v1/instances", http.StatusOK, oxide.InstanceResultsPage{}},
	{http.MethodPost, "/v1/instances", http.StatusCreated, oxide.Instance{}},
	{http.MethodGet, "/v1/instances/{instance}", http.StatusOK, oxide.Instance{}},
	{http.MethodPut, "/v1/instances/{instance}", http.StatusOK, oxide.Instance{}},
	{http.MethodDelete, "/v1/instances/{instance}", http.StatusNoContent, nil},
	{http.MethodPost, "/v1/instances/{instance}/reboot", http.StatusAccepted, oxide.Instance{}},
	{http.MethodPost, "/v1/instances/{instance}/start", http.StatusAccepted, oxide.Instance{}},
	{http.MethodPost, "/v1/instances/{instance}/stop", http.StatusAccepted, oxide.Instance{}},
	{http.MethodGet, "/v1/me", http.StatusOK, oxide.CurrentUser{}},
	{http.MethodGet, "/v1/me/access-tokens", http.StatusOK, oxide.DeviceAccessTokenResultsPage{}},
	{http.MethodDelete, "/v1/me/access-tokens/{token_id}", http.StatusNoContent, nil},
	{http.MethodGet, "/v1/projects", http.StatusOK, oxide.ProjectResultsPage{}},
	{http.MethodPost, "/v1/projects", http.StatusCreated, oxide.Project{}},
	{http.MethodGet, "/v1/projects/{project}", http.StatusOK, oxide.Project{}},
	{http.MethodPut, "/v1/projects/{project}", http.StatusOK, oxide.Project{}},
	{http.MethodDelete, "/v1/projects/{project}", http.StatusNoContent, nil},
	{http.MethodGet, "/v1/system/hardware/sleds", http.StatusOK, oxide.SledResultsPage{}},
	{http.MethodGet, "/v1/system/hardware/sleds/{sled_id}", http.StatusOK, oxide.Sled{}},
	{http.MethodGet, "/v1/system/hardware/sleds/{sled_id}/instances", http.StatusOK, oxide.SledInstanceResultsPage{}},
}

// sdkEnums are the SDK's lists of every value of the enumerations those
// answers hold; a value outside its list is one the SDK's users cannot
// name.
var sdkEnums = []any{
	oxide.InstanceStateCollection,
	oxide.InstanceAutoRestartPolicyCollection,
	oxide.InstanceCpuPlatformCollection,
	oxide.SledStateCollection,
}

// sdkDocument is an OpenAPI 3 document of sdkOperations whose answers'
// schemas are the SDK's types as encoding/json reads them: a field
// without omitempty is required and not null, one with it may be absent
// or null, a number type is an integer when the SDK's is, and an
// enumeration holds only the SDK's values. Errors answer with the SDK's
// Error. A type that decodes itself (the SDK's unions) is left to the SDK,
// which the conformance test calls for every operation.
func sdkDocument(t *testing.T) []byte {
	t.Helper()
	enums := map[reflect.Type][]any{}
	for _, list := range sdkEnums {
		v := reflect.ValueOf(list)
		for i := range v.Len() {
			enums[v.Type().Elem()] = append(enums[v.Type().Elem()], v.Index(i).String())
		}
	}
	unmarshaler := reflect.TypeFor[json.Unmarshaler]()
	gen := openapi3gen.NewGenerator(
		openapi3gen.SchemaCustomizer(func(_ string, ty reflect.Type, tag reflect.StructTag, schema *openapi3.Schema) error {
			if field := tag.Get("json"); field != "" {
				_, opts, _ := strings.Cut(field, ",")
				schema.Nullable = strings.Contains(opts, "omit")
			}
			for ty.Kind() == reflect.Pointer {
				ty = ty.Elem()
			}
			switch {
			case ty == reflect.TypeFor[time.Time]():
			case reflect.PointerTo(ty).Implements(unmarshaler):
				*schema = openapi3.Schema{Nullable: schema.Nullable}
			case enums[ty] != nil:
				schema.Enum = enums[ty]
			case ty.Kind() == reflect.Struct:
				schema.Required = requiredFields(ty)
			}
			return nil
		}))
	errorSchema, err := gen.NewSchemaRefForValue(oxide.Error{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	paramName := regexp.MustCompile(`\{([^}]*)\}`)
	doc := &openapi3.T{
		OpenAPI: "3.0.3",
		Info:    &openapi3.Info{Title: "Oxide's nexus API as the Oxide Go SDK v0.10.0 reads it", Version: "v0.10.0"},
		Paths:   openapi3.NewPaths(),
	}
	for _, op := range sdkOperations {
		failure := openapi3.NewResponse().WithDescription("Oxide's Error").WithJSONSchemaRef(errorSchema)
		responses := openapi3.NewResponses(openapi3.WithName("4XX", failure), openapi3.WithName("5XX", failure))
		success := openapi3.NewResponse().WithDescription("success")
		if op.answer != nil {
			ref, err := gen.NewSchemaRefForValue(op.answer, nil)
			if err != nil {
				t.Fatalf("%s %s: %v", op.method, op.path, err)
			}
			success.WithJSONSchemaRef(ref)
		}
		responses.Set(strconv.Itoa(op.status), &openapi3.ResponseRef{Value: success})
		operation := &openapi3.Operation{OperationID: strings.ToLower(op.method) + op.path, Responses: responses}
		for _, m := range paramName.FindAllStringSubmatch(op.path, -1) {
			operation.Parameters = append(operation.Parameters, &openapi3.ParameterRef{Value: openapi3.NewPathParameter(m[1]).WithSchema(openapi3.NewStringSchema())})
		}
		doc.AddOperation(op.path, op.method, operation)
	}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// requiredFields are the JSON names of a struct's fields that
// encoding/json always writes: those without omitempty or omitzero.
func requiredFields(ty reflect.Type) []string {
	var out []string
	for i := range ty.NumField() {
		field := ty.Field(i)
		name, opts, _ := strings.Cut(field.Tag.Get("json"), ",")
		if !field.IsExported() || name == "-" || strings.Contains(opts, "omit") {
			continue
		}
		if name == "" {
			name = field.Name
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// N9: the SDK's types, as sdkDocument reads them, refuse the answers an
// SDK user could not rely on, and take one the SDK reads.
func TestN9_TheSDKsTypesRefuseAnAnswerOxidesUsersCouldNotRead(t *testing.T) {
	checker, err := openapicheck.New(sdkDocument(t), openapicheck.OtherRoutesUnchecked())
	if err != nil {
		t.Fatal(err)
	}
	instance := func(edit func(map[string]any)) []byte {
		body := map[string]any{
			"id": "7c3a8e0a-5d2b-4b8e-9a51-0d6c2f4e1b90", "name": "web-1", "description": "", "hostname": "web-1",
			"project_id": "0d6c2f4e-5d2b-4b8e-9a51-7c3a8e0a1b90", "memory": 4 << 30, "ncpus": 2, "run_state": "running",
			"auto_restart_enabled": false, "auto_restart_policy": nil, "enable_jumbo_frames": false,
			"time_created": "2026-12-03T07:00:00Z", "time_modified": "2026-12-03T07:00:00Z", "time_run_state_updated": "2026-12-03T07:00:00Z",
		}
		edit(body)
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	check := func(body []byte, status ...int) openapicheck.Exchange {
		req := httptest.NewRequest(http.MethodGet, "/v1/instances/web-1?project=p", nil)
		return checker.Check(req, nil, append(status, http.StatusOK)[0], http.Header{"Content-Type": {"application/json"}}, body)
	}
	if e := check(instance(func(map[string]any) {})); len(e.Problems) != 0 {
		t.Fatalf("an instance as the SDK reads it: %v", e)
	}
	var into oxide.Instance
	if err := json.Unmarshal(instance(func(map[string]any) {}), &into); err != nil || into.RunState != oxide.InstanceStateRunning {
		t.Fatalf("the SDK reads the good instance as %+v, %v", into, err)
	}
	for name, edit := range map[string]func(map[string]any){
		"a run state the SDK does not name":    func(b map[string]any) { b["run_state"] = "Running" },
		"memory as a string":                   func(b map[string]any) { b["memory"] = "4294967296" },
		"no enable_jumbo_frames":               func(b map[string]any) { delete(b, "enable_jumbo_frames") },
		"a null time_created":                  func(b map[string]any) { b["time_created"] = nil },
		"an auto-restart policy of another":    func(b map[string]any) { b["auto_restart_policy"] = "sometimes" },
		"a time that is no RFC 3339 date-time": func(b map[string]any) { b["time_modified"] = "yesterday" },
	} {
		if e := check(instance(edit)); len(e.Problems) == 0 {
			t.Errorf("%s: no problem found", name)
		}
	}
	if e := check([]byte(`{"message":"gone"}`), http.StatusNotFound); len(e.Problems) == 0 {
		t.Error("an error with no request_id: no problem found")
	}
}
