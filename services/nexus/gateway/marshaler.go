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

// Marshal implements runtime.Marshaler.
func (OxideJSON) Marshal(v any) ([]byte, error) {
	msg, ok := v.(proto.Message)
	if !ok {
		return json.Marshal(v)
	}
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
	obj, ok := v.(map[string]any)
	if !ok || md.FullName().Parent() == "google.protobuf" {
		return v // well-known types keep their own JSON forms
	}
	for key, val := range obj {
		fd := md.Fields().ByName(protoreflect.Name(key))
		if fd == nil || fd.IsMap() {
			continue
		}
		convert := func(x any) any { return x }
		switch fd.Kind() {
		case protoreflect.Int64Kind, protoreflect.Uint64Kind, protoreflect.Sint64Kind,
			protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
			convert = func(x any) any {
				if s, ok := x.(string); ok {
					return json.Number(s)
				}
				return x
			}
		case protoreflect.MessageKind:
			sub := fd.Message()
			convert = func(x any) any { return numbers64(x, sub) }
		}
		if list, ok := val.([]any); ok && fd.IsList() {
			for i := range list {
				list[i] = convert(list[i])
			}
			continue
		}
		obj[key] = convert(val)
	}
	return obj
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

// checkValues walks a decoded JSON body along its message's fields; path
// names the field for the error.
func checkValues(v any, md protoreflect.MessageDescriptor, path string) error {
	obj, ok := v.(map[string]any)
	if !ok || md.FullName().Parent() == "google.protobuf" {
		return nil // protojson judges the shape, and well-known types
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
		values := []any{val}
		if list, ok := val.([]any); ok && fd.IsList() {
			values = list
		}
		for _, x := range values {
			if err := checkValue(x, fd, field); err != nil {
				return err
			}
		}
	}
	return nil
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
