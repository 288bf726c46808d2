package main

import (
	"fmt"
	"github.com/rackplane/rackplane/services/nexus/app"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"google.golang.org/protobuf/reflect/protoreflect"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/services/nexus/gateway"
)

const (
	errorSchemaRef   = "#/components/schemas/Error"
	errorResponseRef = "#/components/responses/Error"
)

// errorSchema is Oxide's error envelope as the gateway writes it
// (gateway/errors.go): error_code is left out when there is none.
func errorSchema() *openapi3.SchemaRef {
	s := openapi3.NewObjectSchema()
	s.Description = "Error information from a response (Oxide's envelope)."
	s.Properties = openapi3.Schemas{
		"request_id": openapi3.NewStringSchema().NewRef(),
		"error_code": openapi3.NewStringSchema().NewRef(),
		"message":    openapi3.NewStringSchema().NewRef(),
	}
	s.Required = []string{"request_id", "message"}
	return s.NewRef()
}

// correctOperations gives every operation the gateway's success status
// and Oxide's error responses, and types its parameters as the fields of
// its method's request message.
func correctOperations(doc *openapi3.T) error {
	doc.Components.Schemas["Error"] = errorSchema()
	doc.Components.Responses = openapi3.ResponseBodies{"Error": &openapi3.ResponseRef{Value: openapi3.NewResponse().
		WithDescription("Error").WithJSONSchemaRef(&openapi3.SchemaRef{Ref: errorSchemaRef, Value: errorSchema().Value})}}
	for path, item := range doc.Paths.Map() {
		for verb, op := range item.Operations() {
			method, err := rpcMethod(op.OperationID)
			if err != nil {
				return fmt.Errorf("%s %s: %w", verb, path, err)
			}
			if err := correctResponses(doc, op, method); err != nil {
				return fmt.Errorf("%s %s: %w", verb, path, err)
			}
			if err := correctParameters(op, method.Input()); err != nil {
				return fmt.Errorf("%s %s: %w", verb, path, err)
			}
			if fullMethod(method) == nexusv1.NexusExternal_InstanceUpdate_FullMethodName {
				op.Parameters = append(op.Parameters, &openapi3.ParameterRef{Value: openapi3.NewHeaderParameter("If-Match").
					WithDescription("the instance's time_modified as last read: the update is refused (409) if it changed since").
					WithSchema(openapi3.NewStringSchema().WithFormat("date-time"))})
			}
		}
	}
	return nil
}

// rpcMethod is the NexusExternal method of an operation id
// protoc-gen-openapiv2 wrote ("NexusExternal_InstanceCreate").
func rpcMethod(operationID string) (protoreflect.MethodDescriptor, error) {
	service, name, ok := strings.Cut(operationID, "_")
	sd := nexusv1.File_omicron_nexus_v1_external_proto.Services().ByName(protoreflect.Name(service))
	if !ok || sd == nil || sd.Methods().ByName(protoreflect.Name(name)) == nil {
		return nil, fmt.Errorf("operation id %q names no NexusExternal method", operationID)
	}
	return sd.Methods().ByName(protoreflect.Name(name)), nil
}

// fullMethod is a method's gRPC name, as the gateway's status table has it.
func fullMethod(md protoreflect.MethodDescriptor) string {
	return "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
}

func correctResponses(doc *openapi3.T, op *openapi3.Operation, method protoreflect.MethodDescriptor) error {
	ok := op.Responses.Value("200")
	if ok == nil || ok.Value == nil {
		return fmt.Errorf("protoc-gen-openapiv2 wrote no 200 response")
	}
	status := gateway.SuccessStatus(fullMethod(method))
	success := ok.Value
	switch status {
	case http.StatusNoContent:
		// The gateway writes no body with a 204 (net/http drops it).
		success = openapi3.NewResponse().WithDescription("successful deletion")
	case http.StatusCreated:
		success.Description = ptr("successful creation")
	case http.StatusAccepted:
		success.Description = ptr("successfully enqueued operation")
	default:
		success.Description = ptr("successful operation")
	}
	op.Responses = withErrors(doc, openapi3.NewResponses(openapi3.WithName(strconv.Itoa(status), success)))
	return nil
}

// withErrors adds Oxide's error envelope as the answer of every 4xx and
// 5xx status, as Oxide's document has it.
func withErrors(doc *openapi3.T, responses *openapi3.Responses) *openapi3.Responses {
	errorRef := &openapi3.ResponseRef{Ref: errorResponseRef, Value: doc.Components.Responses["Error"].Value}
	responses.Set("4XX", errorRef)
	responses.Set("5XX", errorRef)
	return responses
}

// correctParameters types each path and query parameter as the request
// message's field of its name.
func correctParameters(op *openapi3.Operation, input protoreflect.MessageDescriptor) error {
	for _, p := range op.Parameters {
		fd := input.Fields().ByName(protoreflect.Name(p.Value.Name))
		if fd == nil {
			return fmt.Errorf("parameter %q is no field of %s", p.Value.Name, input.FullName())
		}
		if p.Value.Schema == nil || p.Value.Schema.Value == nil {
			return fmt.Errorf("parameter %q has no schema", p.Value.Name)
		}
		correctScalar(p.Value.Schema.Value, fd)
		if p.Value.Name == "limit" {
			p.Value.Schema.Value.Max = ptr(float64(app.MaxPageSize))
		}
	}
	return nil
}

// addDocumentRoute describes GET /openapi.json itself, which needs no
// token.
func addDocumentRoute(doc *openapi3.T) {
	object := openapi3.NewObjectSchema()
	object.Description = "This document."
	op := &openapi3.Operation{
		OperationID: "OpenAPIDocument",
		Summary:     "The API's OpenAPI 3 document.",
		Tags:        []string{"NexusExternal"},
		Security:    openapi3.NewSecurityRequirements(),
		Responses: withErrors(doc, openapi3.NewResponses(openapi3.WithName("200",
			openapi3.NewResponse().WithDescription("successful operation").WithJSONSchema(object)))),
	}
	doc.AddOperation("/openapi.json", http.MethodGet, op)
}

func ptr[T any](v T) *T { return &v }

// boundFields gives the body fields the app bounds beyond their type
// their maximum, so that the document does not allow what the server
// refuses. Run once the schemas have their final names.
func boundFields(doc *openapi3.T) error {
	mint, ok := doc.Components.Schemas["AccessTokenCreateParams"]
	if !ok || mint.Value == nil || mint.Value.Properties["expires_in_seconds"] == nil {
		return fmt.Errorf("no AccessTokenCreateParams.expires_in_seconds to bound")
	}
	mint.Value.Properties["expires_in_seconds"].Value.Max = ptr(float64(app.MaxTokenLifetime / time.Second))
	return nil
}
