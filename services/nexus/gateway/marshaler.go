package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"

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
		return decode.Unmarshal(data, msg)
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && rv.Elem().Kind() == reflect.Pointer {
		if rv.Elem().IsNil() {
			rv.Elem().Set(reflect.New(rv.Elem().Type().Elem()))
		}
		if msg, ok := rv.Elem().Interface().(proto.Message); ok {
			return decode.Unmarshal(data, msg)
		}
	}
	return json.Unmarshal(data, v)
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
