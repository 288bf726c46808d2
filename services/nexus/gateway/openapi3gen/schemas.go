package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"google.golang.org/protobuf/reflect/protoreflect"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
)

const schemasPrefix = "#/components/schemas/"

// definitionPrefix is what protoc-gen-openapiv2 puts before a message's
// name (its package's last part); the document names schemas as Oxide's
// does, by the message alone.
const definitionPrefix = "v1"

// renameSchemas names each message's schema after the message alone
// ("v1Instance" → "Instance"), in the components and in every reference.
func renameSchemas(doc *openapi3.T) error {
	renamed := openapi3.Schemas{}
	for name, s := range doc.Components.Schemas {
		to := strings.TrimPrefix(name, definitionPrefix)
		if _, taken := renamed[to]; taken {
			return fmt.Errorf("two schemas would be named %s", to)
		}
		renamed[to] = s
	}
	doc.Components.Schemas = renamed
	eachSchemaRef(doc, func(sr *openapi3.SchemaRef, _ direction) {
		if name, ok := strings.CutPrefix(sr.Ref, schemasPrefix); ok {
			sr.Ref = schemasPrefix + strings.TrimPrefix(name, definitionPrefix)
		}
	})
	return nil
}

// direction says whether a schema describes what a client sends or what it
// receives: the same proto3 field is absent, null or zero differently in
// each.
type direction uint8

const (
	request direction = 1 << iota
	response
)

// correctSchemas corrects each message's schema to its proto fields, as
// the gateway's marshaler writes them (responses) or protojson reads them
// (requests).
func correctSchemas(doc *openapi3.T) error {
	directions := map[string]direction{}
	eachSchemaRef(doc, func(sr *openapi3.SchemaRef, d direction) {
		if name, ok := strings.CutPrefix(sr.Ref, schemasPrefix); ok {
			directions[name] |= d
		}
	})
	messages := nexusv1.File_omicron_nexus_v1_external_proto.Messages()
	for _, name := range slices.Sorted(maps.Keys(doc.Components.Schemas)) {
		md := messages.ByName(protoreflect.Name(name))
		if md == nil {
			continue // Error, and gRPC's own schemas dropUnused removes
		}
		s := doc.Components.Schemas[name].Value
		var err error
		switch directions[name] {
		case request:
			err = correctRequest(s, md)
		case response:
			err = correctResponse(s, md)
		case request | response:
			err = fmt.Errorf("schema %s is both sent and received: its fields' presence cannot be said once", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// correctResponse: every field is written, zero or null when unset (the
// gateway's marshaler emits unpopulated fields), except a proto3
// `optional` one, which is left out when unset.
func correctResponse(s *openapi3.Schema, md protoreflect.MessageDescriptor) error {
	s.Required = nil
	return eachField(s, md, func(prop *openapi3.SchemaRef, fd protoreflect.FieldDescriptor) *openapi3.SchemaRef {
		if !fd.HasOptionalKeyword() {
			s.Required = append(s.Required, string(fd.Name()))
		}
		return prop
	})
}

// correctRequest: a field is required where the proto says REQUIRED
// (protoc-gen-openapiv2 wrote those); protojson takes null for any other,
// as absent.
func correctRequest(s *openapi3.Schema, md protoreflect.MessageDescriptor) error {
	return eachField(s, md, func(prop *openapi3.SchemaRef, fd protoreflect.FieldDescriptor) *openapi3.SchemaRef {
		if slices.Contains(s.Required, string(fd.Name())) {
			return prop
		}
		if prop.Ref != "" {
			// A reference's siblings are ignored in OpenAPI 3.0.
			wrapped := &openapi3.Schema{AllOf: openapi3.SchemaRefs{prop}, Nullable: true}
			return wrapped.NewRef()
		}
		prop.Value.Nullable = true
		return prop
	})
}

// eachField corrects each property of s to its field of md (types first),
// then lets fix replace it.
func eachField(s *openapi3.Schema, md protoreflect.MessageDescriptor,
	fix func(prop *openapi3.SchemaRef, fd protoreflect.FieldDescriptor) *openapi3.SchemaRef) error {
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		name := string(fd.Name())
		prop := s.Properties[name]
		if prop == nil {
			return fmt.Errorf("%s: field %s has no property", md.FullName(), name)
		}
		if prop.Ref == "" {
			value := prop.Value
			if fd.IsList() && value.Items != nil && value.Items.Ref == "" {
				value = value.Items.Value
			}
			correctScalar(value, fd)
		}
		s.Properties[name] = fix(prop, fd)
	}
	if len(s.Properties) != fields.Len() {
		return fmt.Errorf("%s: %d properties for %d fields", md.FullName(), len(s.Properties), fields.Len())
	}
	return nil
}

// correctScalar types an integer as the gateway writes it: a JSON number
// (protoc-gen-openapiv2 says string for 64 bits, as protojson writes
// them), with its width and sign.
func correctScalar(s *openapi3.Schema, fd protoreflect.FieldDescriptor) {
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		s.Type, s.Format = &openapi3.Types{openapi3.TypeInteger}, "int32"
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		s.Type, s.Format = &openapi3.Types{openapi3.TypeInteger}, "int64"
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		s.Type, s.Format, s.Min = &openapi3.Types{openapi3.TypeInteger}, "uint32", ptr(0.0)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		s.Type, s.Format, s.Min = &openapi3.Types{openapi3.TypeInteger}, "uint64", ptr(0.0)
	}
}

// dropUnused removes the schemas no operation reaches: the gRPC wrappers
// that response_body unwraps, and gRPC's error status.
func dropUnused(doc *openapi3.T) {
	used := map[string]bool{}
	eachSchemaRef(doc, func(sr *openapi3.SchemaRef, _ direction) {
		if name, ok := strings.CutPrefix(sr.Ref, schemasPrefix); ok {
			used[name] = true
		}
	})
	for name := range doc.Components.Schemas {
		if !used[name] {
			delete(doc.Components.Schemas, name)
		}
	}
}

// eachSchemaRef calls fn for every schema the operations hold, and through
// their references every schema of the components they reach, saying
// whether a request or a response carries it. fn sees a reference before
// it is followed, so it may rename it.
func eachSchemaRef(doc *openapi3.T, fn func(sr *openapi3.SchemaRef, d direction)) {
	followed := map[string]direction{}
	var visit func(sr *openapi3.SchemaRef, d direction)
	visit = func(sr *openapi3.SchemaRef, d direction) {
		fn(sr, d)
		name, ok := strings.CutPrefix(sr.Ref, schemasPrefix)
		target := doc.Components.Schemas[name]
		if !ok || target == nil || followed[name]&d != 0 {
			return
		}
		followed[name] |= d
		eachInside(target.Value, d, visit)
	}
	for _, path := range doc.Paths.InMatchingOrder() {
		for _, op := range doc.Paths.Value(path).Operations() {
			for _, p := range op.Parameters {
				eachIn(p.Value.Schema, request, visit)
			}
			if op.RequestBody != nil {
				for _, mt := range op.RequestBody.Value.Content {
					eachIn(mt.Schema, request, visit)
				}
			}
			for _, r := range op.Responses.Map() {
				for _, mt := range r.Value.Content {
					eachIn(mt.Schema, response, visit)
				}
			}
		}
	}
}

// eachIn calls fn for sr and, unless it is a reference, every schema
// inside it.
func eachIn(sr *openapi3.SchemaRef, d direction, fn func(*openapi3.SchemaRef, direction)) {
	if sr == nil {
		return
	}
	fn(sr, d)
	if sr.Ref == "" && sr.Value != nil {
		eachInside(sr.Value, d, fn)
	}
}

// eachInside calls eachIn for every schema directly inside s.
func eachInside(s *openapi3.Schema, d direction, fn func(*openapi3.SchemaRef, direction)) {
	for _, name := range slices.Sorted(maps.Keys(s.Properties)) {
		eachIn(s.Properties[name], d, fn)
	}
	eachIn(s.Items, d, fn)
	for _, list := range []openapi3.SchemaRefs{s.AllOf, s.OneOf, s.AnyOf} {
		for _, x := range list {
			eachIn(x, d, fn)
		}
	}
	eachIn(s.Not, d, fn)
	eachIn(s.AdditionalProperties.Schema, d, fn)
}
