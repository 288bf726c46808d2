package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// OxideJSON is the gateway's marshaler: protojson with proto field names,
// except that 64-bit integers are JSON numbers, as Oxide's API (and the
// SDK's uint64 fields) have them, where protojson writes strings.
type OxideJSON struct{}

var _ runtime.Marshaler = OxideJSON{}

var (
	encode = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	decode = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// ContentType implements runtime.Marshaler.
func (OxideJSON) ContentType(any) string { return "application/json" }

// Marshal implements runtime.Marshaler. A message is written in one pass
// (marshaler_encode.go).
func (OxideJSON) Marshal(v any) ([]byte, error) {
	msg, ok := v.(proto.Message)
	if !ok {
		return json.Marshal(v)
	}
	return marshalMessage(msg)
}

// marshalTwoPass is protojson's encoding, decoded, its 64-bit integers
// turned to numbers and encoded again: what Marshal did for every message
// before it wrote them in one pass, kept for the messages the one-pass
// writer does not write itself (formTwoPass).
func marshalTwoPass(msg proto.Message) ([]byte, error) {
	raw, err := encode.Marshal(msg)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, err
	}
	return json.Marshal(numbers64(tree, msg.ProtoReflect().Descriptor()))
}

// numbers64 turns the strings protojson wrote for 64-bit integer fields of
// md back into numbers, recursing into message fields.
func numbers64(v any, md protoreflect.MessageDescriptor) any {
	walkFields(v, md, "", func(x any, fd protoreflect.FieldDescriptor, _ string) (any, error) { //nolint:errcheck // visit never fails
		switch fd.Kind() {
		case protoreflect.Int64Kind, protoreflect.Uint64Kind, protoreflect.Sint64Kind,
			protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
			if s, ok := x.(string); ok {
				return json.Number(s), nil
			}
		case protoreflect.MessageKind:
			return numbers64(x, fd.Message()), nil
		}
		return x, nil
	})
	return v
}

// walkFields calls visit for the value of every field of md in v, a
// decoded JSON object (for a list, each item), and puts back what visit
// returns; field is the field's path from the body, for errors. Maps and
// well-known types are left alone: they keep their own JSON forms.
func walkFields(v any, md protoreflect.MessageDescriptor, path string,
	visit func(x any, fd protoreflect.FieldDescriptor, field string) (any, error)) error {
	obj, ok := v.(map[string]any)
	if !ok || md.FullName().Parent() == "google.protobuf" {
		return nil
	}
	for key, val := range obj {
		fd := md.Fields().ByName(protoreflect.Name(key))
		if fd == nil {
			fd = md.Fields().ByJSONName(key)
		}
		if fd == nil || fd.IsMap() {
			continue
		}
		field := key
		if path != "" {
			field = path + "." + key
		}
		var err error
		if list, ok := val.([]any); ok && fd.IsList() {
			for i := range list {
				if list[i], err = visit(list[i], fd, field); err != nil {
					return err
				}
			}
			continue
		}
		if obj[key], err = visit(val, fd, field); err != nil {
			return err
		}
	}
	return nil
}

// Unmarshal implements runtime.Marshaler. It accepts a message, or a
// pointer to a message pointer (what generated code passes for a body
// field), allocating the message if needed.
func (OxideJSON) Unmarshal(data []byte, v any) error {
	if msg, ok := v.(proto.Message); ok {
		return decodeStrict(data, msg)
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && rv.Elem().Kind() == reflect.Pointer {
		if rv.Elem().IsNil() {
			rv.Elem().Set(reflect.New(rv.Elem().Type().Elem()))
		}
		if msg, ok := rv.Elem().Interface().(proto.Message); ok {
			return decodeStrict(data, msg)
		}
	}
	return json.Unmarshal(data, v)
}

// decodeStrict is protojson's decoding, first held to Oxide's API where
// protojson is lenient (SPEC 7): an integer field takes a JSON integer
// only (not "5", 5.0 or 5e0), and no string holds a NUL character, which
// PostgreSQL cannot store.
func decodeStrict(data []byte, msg proto.Message) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return err
	}
	if err := checkValues(tree, msg.ProtoReflect().Descriptor(), ""); err != nil {
		return err
	}
	return decode.Unmarshal(data, msg)
}

// checkValues holds a decoded JSON body to checkValue, field by field.
func checkValues(v any, md protoreflect.MessageDescriptor, path string) error {
	return walkFields(v, md, path, func(x any, fd protoreflect.FieldDescriptor, field string) (any, error) {
		return x, checkValue(x, fd, field)
	})
}

func checkValue(x any, fd protoreflect.FieldDescriptor, field string) error {
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Uint32Kind, protoreflect.Uint64Kind,
		protoreflect.Sint32Kind, protoreflect.Sint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		n, ok := x.(json.Number)
		if x != nil && (!ok || strings.ContainsAny(string(n), ".eE")) {
			return fmt.Errorf("%s: must be a JSON integer, not %s", field, jsonText(x))
		}
	case protoreflect.StringKind:
		if s, ok := x.(string); ok && strings.ContainsRune(s, 0) {
			return fmt.Errorf("%s: must not contain a NUL character", field)
		}
	case protoreflect.MessageKind:
		return checkValues(x, fd.Message(), field)
	}
	return nil
}

func jsonText(x any) string {
	text, err := json.Marshal(x)
	if err != nil {
		return fmt.Sprint(x)
	}
	return string(text)
}

// NewDecoder implements runtime.Marshaler.
func (m OxideJSON) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		data, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(data)) == 0 {
			return io.EOF
		}
		if err := m.Unmarshal(data, v); err != nil {
			return fmt.Errorf("request body: %w", err)
		}
		return nil
	})
}

// NewEncoder implements runtime.Marshaler.
func (m OxideJSON) NewEncoder(w io.Writer) runtime.Encoder {
	return runtime.EncoderFunc(func(v any) error {
		data, err := m.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	})
}
