// Command openapi3gen writes the REST API's OpenAPI 3 document (served at
// GET /openapi.json) from the Swagger 2 document protoc-gen-openapiv2
// writes: it converts it (kin-openapi's openapi2conv), then corrects it to
// what the gateway sends, which protoc-gen-openapiv2 cannot know:
//
//   - each operation's success status is the gateway's own
//     (gateway.SuccessStatus), 204 with no body;
//   - errors are Oxide's envelope (4XX, 5XX), not gRPC's status;
//   - 64-bit integers are JSON integers (the gateway's marshaler writes
//     numbers), unsigned ones at least 0;
//   - a response field is required unless the proto declares it
//     `optional` (the marshaler then leaves it out when unset); a request
//     field is required where the proto says REQUIRED, and takes null
//     for absent otherwise, as protojson does;
//   - the API's bearer token.
//
// tools/generate.sh runs it after buf; its output is committed and never
// edited by hand.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
)

func main() {
	in := flag.String("swagger", "", "protoc-gen-openapiv2's document of NexusExternal")
	out := flag.String("out", "", "where to write the OpenAPI 3 document")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "openapi3gen:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	if in == "" || out == "" {
		return fmt.Errorf("--swagger and --out are required")
	}
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	doc, err := convert(data)
	if err != nil {
		return err
	}
	text, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(out, append(text, '\n'), 0o644)
}

// convert turns the Swagger 2 document into the corrected OpenAPI 3 one,
// and holds it to kin-openapi's validation.
func convert(swagger []byte) (*openapi3.T, error) {
	var v2 openapi2.T
	if err := json.Unmarshal(swagger, &v2); err != nil {
		return nil, fmt.Errorf("reading the Swagger 2 document: %w", err)
	}
	doc, err := openapi2conv.ToV3(&v2)
	if err != nil {
		return nil, fmt.Errorf("converting to OpenAPI 3: %w", err)
	}
	if err := correct(doc); err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the corrected document is not valid OpenAPI 3: %w", err)
	}
	return doc, nil
}

// correct makes doc describe the wire (see the package comment).
func correct(doc *openapi3.T) error {
	doc.Info = &openapi3.Info{
		Title: "rackplane nexus API",
		Description: "A subset of the Oxide API v1 (omicron rel/v20/rc1) and this product's " +
			"extensions. Every call but this document's needs a bearer token.",
		Version: "v1",
	}
	doc.Components.SecuritySchemes = openapi3.SecuritySchemes{
		bearerScheme: &openapi3.SecuritySchemeRef{Value: &openapi3.SecurityScheme{Type: "http", Scheme: "bearer",
			Description: "An API token: `Authorization: Bearer <token>`."}},
	}
	doc.Security = *openapi3.NewSecurityRequirements().With(openapi3.NewSecurityRequirement().Authenticate(bearerScheme))
	if err := correctOperations(doc); err != nil {
		return err
	}
	addDocumentRoute(doc)
	if err := renameSchemas(doc); err != nil {
		return err
	}
	if err := correctSchemas(doc); err != nil {
		return err
	}
	if err := boundFields(doc); err != nil {
		return err
	}
	dropUnused(doc)
	return nil
}

const bearerScheme = "bearer"
