package gateway

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
)

// twoPassMarshal is OxideJSON.Marshal as it was before the one-pass
// writer, kept here unchanged (marshalTwoPass may change with the
// writer) as what the writer's output has to decode to.
func twoPassMarshal(v any) ([]byte, error) {
	msg, ok := v.(proto.Message)
	if !ok {
		return json.Marshal(v)
	}
	raw, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(msg)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, err
	}
	return json.Marshal(twoPassNumbers64(tree, msg.ProtoReflect().Descriptor()))
}

func twoPassNumbers64(v any, md protoreflect.MessageDescriptor) any {
	obj, ok := v.(map[string]any)
	if !ok || md.FullName().Parent() == "google.protobuf" {
		return v
	}
	fix := func(x any, fd protoreflect.FieldDescriptor) any {
		switch fd.Kind() {
		case protoreflect.Int64Kind, protoreflect.Uint64Kind, protoreflect.Sint64Kind,
			protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
			if s, ok := x.(string); ok {
				return json.Number(s)
			}
		case protoreflect.MessageKind:
			return twoPassNumbers64(x, fd.Message())
		}
		return x
	}
	for key, val := range obj {
		fd := md.Fields().ByName(protoreflect.Name(key))
		if fd == nil {
			fd = md.Fields().ByJSONName(key)
		}
		if fd == nil || fd.IsMap() {
			continue
		}
		if list, ok := val.([]any); ok && fd.IsList() {
			for i := range list {
				list[i] = fix(list[i], fd)
			}
			continue
		}
		obj[key] = fix(val, fd)
	}
	return v
}

// checkMatchesTwoPass fails unless OxideJSON.Marshal and twoPassMarshal
// both refuse msg, or both encode it to JSON that decodes to one tree;
// it reports whether they encoded it.
func checkMatchesTwoPass(t testing.TB, msg proto.Message) bool {
	t.Helper()
	want, wantErr := twoPassMarshal(msg)
	got, err := OxideJSON{}.Marshal(msg)
	name := msg.ProtoReflect().Descriptor().FullName()
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("%s: error %v, two-pass error %v\nmessage: %v\ngot:  %s\nwant: %s", name, err, wantErr, msg, got, want)
	}
	if err != nil {
		return false
	}
	gotTree, err := decodeTree(got)
	if err != nil {
		t.Fatalf("%s: %v\nmessage: %v\ngot: %s", name, err, msg, got)
	}
	wantTree, err := decodeTree(want)
	if err != nil {
		t.Fatalf("%s: two-pass output: %v\nmessage: %v\nwant: %s", name, err, msg, want)
	}
	if !reflect.DeepEqual(gotTree, wantTree) {
		t.Fatalf("%s: output differs from two-pass\nmessage: %v\ngot:  %s\nwant: %s", name, msg, got, want)
	}
	return true
}

// decodeTree decodes one JSON value, numbers as json.Number, as a client
// would; it refuses what a map would hide (a key twice in an object) and
// anything after the value.
func decodeTree(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the JSON value (%v)", err)
	}
	return tree, duplicateKey(data)
}

func duplicateKey(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		keys    map[string]bool // nil for an array
		wantKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch tok {
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			continue
		}
		if top != nil && top.keys != nil {
			if top.wantKey {
				key := tok.(string)
				if top.keys[key] {
					return fmt.Errorf("key %q twice in an object", key)
				}
				top.keys[key], top.wantKey = true, false
				continue
			}
			top.wantKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		}
	}
}

// externalMessages are every message of the external API's file, nested
// ones too: every response (and request) a REST body can hold.
func externalMessages(t testing.TB) []protoreflect.MessageType {
	var out []protoreflect.MessageType
	var walk func(protoreflect.MessageDescriptors)
	walk = func(msgs protoreflect.MessageDescriptors) {
		for i := range msgs.Len() {
			md := msgs.Get(i)
			if md.IsMapEntry() {
				continue
			}
			mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, mt)
			walk(md.Messages())
		}
	}
	walk(nexusv1.File_omicron_nexus_v1_external_proto.Messages())
	return out
}

// The external API has no enum, float, bytes, map, oneof, group or
// extension field, nor a well-known type but Timestamp; these test-only
// types have every one, so the writer is held to the two-pass output for
// what a later API change may bring.
var (
	richTypes     []protoreflect.MessageType
	richExtension = new(protoregistry.Types)
)

func init() {
	files := new(protoregistry.Files)
	for _, fdp := range []*descriptorpb.FileDescriptorProto{richProto3File(), richProto2File(), richEditionsFile()} {
		fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
		if err != nil {
			panic(err)
		}
		if err := files.RegisterFile(fd); err != nil {
			panic(err)
		}
		var walk func(protoreflect.MessageDescriptors)
		walk = func(msgs protoreflect.MessageDescriptors) {
			for i := range msgs.Len() {
				if md := msgs.Get(i); !md.IsMapEntry() {
					richTypes = append(richTypes, dynamicpb.NewMessageType(md))
					walk(md.Messages())
				}
			}
		}
		walk(fd.Messages())
		for i := range fd.Extensions().Len() {
			if err := richExtension.RegisterExtension(dynamicpb.NewExtensionType(fd.Extensions().Get(i))); err != nil {
				panic(err)
			}
		}
	}
}

type fdp = descriptorpb.FieldDescriptorProto

func field(name string, number int32, label descriptorpb.FieldDescriptorProto_Label,
	typ descriptorpb.FieldDescriptorProto_Type, typeName string) *fdp {
	f := &fdp{Name: proto.String(name), Number: proto.Int32(number), Label: label.Enum(), Type: typ.Enum()}
	if typeName != "" {
		f.TypeName = proto.String(typeName)
	}
	return f
}

const (
	optionalLabel = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	repeatedLabel = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	requiredLabel = descriptorpb.FieldDescriptorProto_LABEL_REQUIRED
)

// mapField adds to msg a map<key, value> field and its entry type.
func mapField(msg *descriptorpb.DescriptorProto, name string, number int32,
	key descriptorpb.FieldDescriptorProto_Type, value descriptorpb.FieldDescriptorProto_Type, valueType string, scope string) {
	entry := ""
	for _, part := range strings.Split(name, "_") {
		entry += strings.ToUpper(part[:1]) + part[1:]
	}
	entry += "Entry"
	msg.NestedType = append(msg.NestedType, &descriptorpb.DescriptorProto{
		Name: proto.String(entry),
		Field: []*fdp{
			field("key", 1, optionalLabel, key, ""),
			field("value", 2, optionalLabel, value, valueType),
		},
		Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
	})
	msg.Field = append(msg.Field, field(name, number, repeatedLabel, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, scope+"."+entry))
}

// richProto3File is a proto3 file whose Rich message has a field of
// every kind, repeatedLabel, optionalLabel, in a oneof, in maps, and every
// well-known type.
func richProto3File() *descriptorpb.FileDescriptorProto {
	const pkg = ".rackplane.gatewaytest"
	type T = descriptorpb.FieldDescriptorProto_Type
	scalars := []struct {
		name     string
		typ      T
		typeName string
	}{
		{"i32", descriptorpb.FieldDescriptorProto_TYPE_INT32, ""},
		{"i64", descriptorpb.FieldDescriptorProto_TYPE_INT64, ""},
		{"u32", descriptorpb.FieldDescriptorProto_TYPE_UINT32, ""},
		{"u64", descriptorpb.FieldDescriptorProto_TYPE_UINT64, ""},
		{"s32", descriptorpb.FieldDescriptorProto_TYPE_SINT32, ""},
		{"s64", descriptorpb.FieldDescriptorProto_TYPE_SINT64, ""},
		{"fx32", descriptorpb.FieldDescriptorProto_TYPE_FIXED32, ""},
		{"fx64", descriptorpb.FieldDescriptorProto_TYPE_FIXED64, ""},
		{"sfx32", descriptorpb.FieldDescriptorProto_TYPE_SFIXED32, ""},
		{"sfx64", descriptorpb.FieldDescriptorProto_TYPE_SFIXED64, ""},
		{"fl", descriptorpb.FieldDescriptorProto_TYPE_FLOAT, ""},
		{"db", descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, ""},
		{"ok", descriptorpb.FieldDescriptorProto_TYPE_BOOL, ""},
		{"str", descriptorpb.FieldDescriptorProto_TYPE_STRING, ""},
		{"raw", descriptorpb.FieldDescriptorProto_TYPE_BYTES, ""},
		{"color", descriptorpb.FieldDescriptorProto_TYPE_ENUM, pkg + ".Color"},
		{"inner", descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, pkg + ".Rich.Inner"},
	}
	const msgT = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	rich := &descriptorpb.DescriptorProto{
		Name: proto.String("Rich"),
		OneofDecl: []*descriptorpb.OneofDescriptorProto{
			{Name: proto.String("choice")},
		},
	}
	for i, s := range scalars {
		n := int32(i)
		rich.Field = append(rich.Field,
			field(s.name, 1+n, optionalLabel, s.typ, s.typeName),
			field("r_"+s.name, 30+n, repeatedLabel, s.typ, s.typeName))
		opt := field("opt_"+s.name, 60+n, optionalLabel, s.typ, s.typeName)
		opt.Proto3Optional = proto.Bool(true)
		opt.OneofIndex = proto.Int32(int32(len(rich.OneofDecl)))
		rich.OneofDecl = append(rich.OneofDecl, &descriptorpb.OneofDescriptorProto{Name: proto.String("_opt_" + s.name)})
		rich.Field = append(rich.Field, opt)
	}
	// The synthetic oneofs of optional fields come after the real ones.
	for _, f := range []*fdp{
		field("ch_i64", 90, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_INT64, ""),
		field("ch_str", 91, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_STRING, ""),
		field("ch_rich", 92, optionalLabel, msgT, pkg+".Rich"),
		field("ch_ts", 93, optionalLabel, msgT, ".google.protobuf.Timestamp"),
		field("ch_null", 94, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_ENUM, ".google.protobuf.NullValue"),
	} {
		f.OneofIndex = proto.Int32(0)
		rich.Field = append(rich.Field, f)
	}
	wkt := []struct {
		name     string
		label    descriptorpb.FieldDescriptorProto_Label
		typeName string
	}{
		{"ts", optionalLabel, "Timestamp"}, {"dur", optionalLabel, "Duration"}, {"st", optionalLabel, "Struct"},
		{"val", optionalLabel, "Value"}, {"lv", optionalLabel, "ListValue"}, {"w_i64", optionalLabel, "Int64Value"},
		{"w_u64", optionalLabel, "UInt64Value"}, {"w_i32", optionalLabel, "Int32Value"}, {"w_u32", optionalLabel, "UInt32Value"},
		{"w_str", optionalLabel, "StringValue"}, {"w_bytes", optionalLabel, "BytesValue"}, {"w_bool", optionalLabel, "BoolValue"},
		{"w_db", optionalLabel, "DoubleValue"}, {"w_fl", optionalLabel, "FloatValue"}, {"empty", optionalLabel, "Empty"},
		{"any", optionalLabel, "Any"}, {"mask", optionalLabel, "FieldMask"}, {"r_ts", repeatedLabel, "Timestamp"},
		{"r_any", repeatedLabel, "Any"}, {"r_val", repeatedLabel, "Value"}, {"r_w_u64", repeatedLabel, "UInt64Value"},
	}
	for i, w := range wkt {
		rich.Field = append(rich.Field, field(w.name, 100+int32(i), w.label, msgT, ".google.protobuf."+w.typeName))
	}
	rich.Field = append(rich.Field,
		field("null", 130, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_ENUM, ".google.protobuf.NullValue"),
		field("r_null", 131, repeatedLabel, descriptorpb.FieldDescriptorProto_TYPE_ENUM, ".google.protobuf.NullValue"),
		field("child", 132, optionalLabel, msgT, pkg+".Rich"),
		field("children", 133, repeatedLabel, msgT, pkg+".Rich"),
	)
	for i, m := range []struct {
		name       string
		key, value T
		valueType  string
	}{
		{"m_str_i64", descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_INT64, ""},
		{"m_i64_rich", descriptorpb.FieldDescriptorProto_TYPE_INT64, msgT, pkg + ".Rich"},
		{"m_bool_str", descriptorpb.FieldDescriptorProto_TYPE_BOOL, descriptorpb.FieldDescriptorProto_TYPE_STRING, ""},
		{"m_u32_ts", descriptorpb.FieldDescriptorProto_TYPE_UINT32, msgT, ".google.protobuf.Timestamp"},
		{"m_str_color", descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_ENUM, pkg + ".Color"},
		{"m_s64_raw", descriptorpb.FieldDescriptorProto_TYPE_SINT64, descriptorpb.FieldDescriptorProto_TYPE_BYTES, ""},
		{"m_fx64_db", descriptorpb.FieldDescriptorProto_TYPE_FIXED64, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, ""},
		{"m_i32_inner", descriptorpb.FieldDescriptorProto_TYPE_INT32, msgT, pkg + ".Rich.Inner"},
		{"m_str_fl", descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_FLOAT, ""},
		{"m_u64_u64", descriptorpb.FieldDescriptorProto_TYPE_UINT64, descriptorpb.FieldDescriptorProto_TYPE_UINT64, ""},
	} {
		mapField(rich, m.name, 140+int32(i), m.key, m.value, m.valueType, pkg+".Rich")
	}
	inner := &descriptorpb.DescriptorProto{
		Name: proto.String("Inner"),
		Field: []*fdp{
			field("n", 1, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_INT64, ""),
			field("ns", 2, repeatedLabel, descriptorpb.FieldDescriptorProto_TYPE_UINT64, ""),
			field("s", 3, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_STRING, ""),
			field("back", 5, optionalLabel, msgT, pkg+".Rich"),
		},
	}
	mapField(inner, "m", 4, descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_SINT64, "", pkg+".Rich.Inner")
	rich.NestedType = append(rich.NestedType, inner)
	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("rackplane/gatewaytest/rich.proto"),
		Package: proto.String("rackplane.gatewaytest"),
		Syntax:  proto.String("proto3"),
		Dependency: []string{
			"google/protobuf/timestamp.proto", "google/protobuf/duration.proto", "google/protobuf/struct.proto",
			"google/protobuf/wrappers.proto", "google/protobuf/empty.proto", "google/protobuf/any.proto",
			"google/protobuf/field_mask.proto",
		},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Color"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("COLOR_UNSPECIFIED"), Number: proto.Int32(0)},
				{Name: proto.String("red"), Number: proto.Int32(1)},
				{Name: proto.String("GREEN"), Number: proto.Int32(2)},
			},
		}},
		MessageType: []*descriptorpb.DescriptorProto{rich},
	}
}

// richProto2File is a proto2 file: required fields, defaults, groups
// (which protojson names by their type) and extensions.
func richProto2File() *descriptorpb.FileDescriptorProto {
	const pkg = ".rackplane.gatewaytest2"
	const msgT = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	const groupT = descriptorpb.FieldDescriptorProto_TYPE_GROUP
	n := field("n", 2, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_INT64, "")
	n.DefaultValue = proto.String("7")
	legacy := &descriptorpb.DescriptorProto{
		Name: proto.String("Legacy"),
		Field: []*fdp{
			field("id", 1, requiredLabel, descriptorpb.FieldDescriptorProto_TYPE_STRING, ""),
			n,
			field("u", 3, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_UINT64, ""),
			field("rs", 4, repeatedLabel, descriptorpb.FieldDescriptorProto_TYPE_SINT64, ""),
			field("payload", 5, optionalLabel, groupT, pkg+".Legacy.Payload"),
			field("child", 6, optionalLabel, msgT, pkg+".Legacy"),
			field("ext", 7, optionalLabel, msgT, pkg+".Extended"),
			field("item", 8, repeatedLabel, groupT, pkg+".Legacy.Item"),
			field("shade", 9, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_ENUM, pkg+".Legacy.Shade"),
			field("exts", 10, repeatedLabel, msgT, pkg+".Extended"),
			field("raw", 12, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_BYTES, ""),
			field("s", 13, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_STRING, ""),
		},
		NestedType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Payload"), Field: []*fdp{
				field("x", 1, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_INT64, ""),
				field("ys", 2, repeatedLabel, descriptorpb.FieldDescriptorProto_TYPE_FIXED64, ""),
				field("deep", 3, optionalLabel, msgT, pkg+".Legacy"),
			}},
			{Name: proto.String("Item"), Field: []*fdp{
				field("z", 1, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_SFIXED64, ""),
			}},
		},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Shade"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("LIGHT"), Number: proto.Int32(0)},
				{Name: proto.String("DARK"), Number: proto.Int32(1)},
			},
		}},
	}
	mapField(legacy, "m", 11, descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_INT64, "", pkg+".Legacy")
	extension := func(f *fdp) *fdp {
		f.Extendee = proto.String(pkg + ".Extended")
		return f
	}
	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("rackplane/gatewaytest/legacy.proto"),
		Package: proto.String("rackplane.gatewaytest2"),
		Syntax:  proto.String("proto2"),
		MessageType: []*descriptorpb.DescriptorProto{
			legacy,
			{
				Name:           proto.String("Extended"),
				Field:          []*fdp{field("a", 1, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_INT64, "")},
				ExtensionRange: []*descriptorpb.DescriptorProto_ExtensionRange{{Start: proto.Int32(100), End: proto.Int32(200)}},
			},
			{
				// Holds an Extended, to show the writer splices the two-pass
				// form of one into its own.
				Name: proto.String("Holder"),
				Field: []*fdp{
					field("ext", 1, optionalLabel, msgT, pkg+".Extended"),
					field("n", 2, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_FIXED64, ""),
				},
			},
		},
		Extension: []*fdp{
			extension(field("ext_n", 100, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_INT64, "")),
			extension(field("ext_msg", 101, optionalLabel, msgT, pkg+".Legacy")),
			extension(field("ext_rs", 102, repeatedLabel, descriptorpb.FieldDescriptorProto_TYPE_UINT64, "")),
			extension(field("ext_s", 103, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_STRING, "")),
		},
	}
}

// richEditionsFile has a delimited message field not named like a group:
// protojson names it by the field, yet it is of GroupKind, under which
// the two-pass pipeline left 64-bit integers strings.
func richEditionsFile() *descriptorpb.FileDescriptorProto {
	body := field("body_part", 1, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".rackplane.gatewaytest3.Delimited.Body")
	body.Options = &descriptorpb.FieldOptions{Features: &descriptorpb.FeatureSet{
		MessageEncoding: descriptorpb.FeatureSet_DELIMITED.Enum(),
	}}
	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("rackplane/gatewaytest/editions.proto"),
		Package: proto.String("rackplane.gatewaytest3"),
		Syntax:  proto.String("editions"),
		Edition: descriptorpb.Edition_EDITION_2023.Enum(),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Delimited"),
			Field: []*fdp{
				body,
				field("n", 2, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_INT64, ""),
			},
			NestedType: []*descriptorpb.DescriptorProto{{
				Name:  proto.String("Body"),
				Field: []*fdp{field("n", 1, optionalLabel, descriptorpb.FieldDescriptorProto_TYPE_INT64, "")},
			}},
		}},
	}
}

// filler fills messages with random values, leaning to the edges:
// extreme integers, awkward strings and floats, set and unset fields.
type filler struct {
	r *rand.Rand
	// badUTF8 and badTime also make values protojson refuses.
	badUTF8, badTime bool
	// messages bounds the messages in one fill: Rich, with every kind of
	// field, branches too much for fillDepth alone.
	messages int
}

const fillDepth = 3

func (f *filler) fill(m protoreflect.Message, depth int) {
	md := m.Descriptor()
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		m.Set(md.Fields().ByName("seconds"), protoreflect.ValueOfInt64(f.timestampSeconds()))
		m.Set(md.Fields().ByName("nanos"), protoreflect.ValueOfInt32(f.nanos()))
		return
	case "google.protobuf.Duration":
		secs := f.r.Int64N(2*315576000000+1) - 315576000000
		nanos := f.r.Int32N(1_000_000_000)
		if secs < 0 || secs == 0 && f.r.IntN(2) == 0 {
			nanos = -nanos
		}
		m.Set(md.Fields().ByName("seconds"), protoreflect.ValueOfInt64(secs))
		m.Set(md.Fields().ByName("nanos"), protoreflect.ValueOfInt32(nanos))
		return
	case "google.protobuf.Any":
		inner := f.anyContent(depth)
		value, err := proto.Marshal(inner)
		if err != nil {
			panic(err)
		}
		m.Set(md.Fields().ByName("type_url"), protoreflect.ValueOfString("type.googleapis.com/"+string(inner.ProtoReflect().Descriptor().FullName())))
		m.Set(md.Fields().ByName("value"), protoreflect.ValueOfBytes(value))
		return
	case "google.protobuf.FieldMask":
		paths := m.Mutable(md.Fields().ByName("paths")).List()
		for range f.r.IntN(4) {
			paths.Append(protoreflect.ValueOfString([]string{"a", "foo_bar", "foo.bar_baz", "x1"}[f.r.IntN(4)]))
		}
		return
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			continue
		}
		if fd.HasPresence() && fd.Cardinality() != protoreflect.Required && f.r.IntN(3) == 0 {
			continue
		}
		f.fillField(m, fd, depth)
	}
	oneofs := md.Oneofs()
	for i := range oneofs.Len() {
		od := oneofs.Get(i)
		if od.IsSynthetic() {
			continue
		}
		// Value has to hold a kind; elsewhere a oneof may be unset.
		pick := f.r.IntN(od.Fields().Len() + 1)
		if md.FullName() == "google.protobuf.Value" {
			pick = f.r.IntN(od.Fields().Len())
			if depth >= fillDepth || f.messages <= 0 {
				pick = 0 // null_value: no deeper Struct or ListValue
			}
		}
		if pick < od.Fields().Len() {
			f.fillField(m, od.Fields().Get(pick), depth)
		}
	}
	if md.ExtensionRanges().Len() > 0 {
		var exts []protoreflect.ExtensionTypeDescriptor
		richExtension.RangeExtensionsByMessage(md.FullName(), func(xt protoreflect.ExtensionType) bool {
			exts = append(exts, xt.TypeDescriptor())
			return true
		})
		// In a fixed order, for a seed to make one message.
		slices.SortFunc(exts, func(x, y protoreflect.ExtensionTypeDescriptor) int {
			return cmp.Compare(x.Number(), y.Number())
		})
		for _, xd := range exts {
			if f.r.IntN(2) == 0 {
				f.fillField(m, xd, depth)
			}
		}
	}
}

func (f *filler) fillField(m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int) {
	if fd.Message() != nil && !fd.IsMap() {
		if depth >= fillDepth || f.messages <= 0 {
			return
		}
	}
	switch {
	case fd.IsList():
		list := m.Mutable(fd).List()
		for range f.r.IntN(4) {
			if fd.Message() != nil {
				if f.messages--; f.messages < 0 {
					return
				}
				v := list.NewElement()
				f.fill(v.Message(), depth+1)
				list.Append(v)
			} else {
				list.Append(f.scalar(fd, depth))
			}
		}
	case fd.IsMap():
		mp := m.Mutable(fd).Map()
		for range f.r.IntN(4) {
			key := f.scalar(fd.MapKey(), depth).MapKey()
			if fd.MapValue().Message() != nil {
				if f.messages--; depth >= fillDepth || f.messages < 0 {
					return
				}
				v := mp.NewValue()
				f.fill(v.Message(), depth+1)
				mp.Set(key, v)
			} else {
				mp.Set(key, f.scalar(fd.MapValue(), depth))
			}
		}
	case fd.Message() != nil:
		f.messages--
		v := m.NewField(fd)
		f.fill(v.Message(), depth+1)
		m.Set(fd, v)
	default:
		m.Set(fd, f.scalar(fd, depth))
	}
}

func (f *filler) scalar(fd protoreflect.FieldDescriptor, depth int) protoreflect.Value {
	r := f.r
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.IntN(2) == 0)
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		if r.IntN(5) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(r.Int32() - math.MaxInt32/2))
		}
		return protoreflect.ValueOfEnum(values.Get(r.IntN(values.Len())).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32([]int32{0, 1, -1, math.MaxInt32, math.MinInt32, r.Int32(), -r.Int32()}[r.IntN(7)])
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32([]uint32{0, 1, math.MaxUint32, r.Uint32()}[r.IntN(4)])
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64([]int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1<<53 + 1, r.Int64(), -r.Int64()}[r.IntN(8)])
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64([]uint64{0, 1, math.MaxUint64, 1<<53 + 1, r.Uint64(), r.Uint64N(1 << 40)}[r.IntN(6)])
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(f.float(fd, 32)))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(f.float(fd, 64))
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(f.str())
	case protoreflect.BytesKind:
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return protoreflect.ValueOfBytes(b)
	}
	panic(fmt.Sprintf("no random %v", fd.Kind()))
}

func (f *filler) float(fd protoreflect.FieldDescriptor, bits int) float64 {
	r := f.r
	// protojson refuses a google.protobuf.Value that is not finite.
	finite := fd.ContainingMessage().FullName() == "google.protobuf.Value"
	for {
		var x float64
		switch r.IntN(12) {
		case 0:
			x = 0
		case 1:
			x = math.Copysign(0, -1)
		case 2:
			x = math.NaN()
		case 3:
			x = math.Inf([]int{1, -1}[r.IntN(2)])
		case 4:
			x = []float64{1e-7, 1e21, 1e20, 123456789.125, -0.1, 1e-6, 5e-324}[r.IntN(7)]
		case 5:
			x = []float64{math.MaxFloat32, math.SmallestNonzeroFloat32, math.MaxFloat64, math.SmallestNonzeroFloat64}[r.IntN(4)]
		case 6:
			x = math.Float64frombits(r.Uint64())
		case 7:
			x = float64(math.Float32frombits(r.Uint32()))
		default:
			x = r.NormFloat64() * math.Pow(10, float64(r.IntN(60)-30))
		}
		if bits == 32 {
			x = float64(float32(x))
		}
		if !finite || !math.IsNaN(x) && !math.IsInf(x, 0) {
			return x
		}
	}
}

var stringPieces = []string{
	"", "a", "vm-01", "Project X", `"`, `\`, `\"`, "\x00", "\x01", "\x07", "\b", "\f", "\n", "\r", "\t",
	"\x1f", "\x7f", "/", "</script>", "&amp;", "<>", "\u2028", "\u2029", "é", "日本語", "😀", "\ufeff",
	"\ufffd", "\u00a0", "𝄞", "\\u0000", "null", "{}", "[1,2]", "1e400", "-0",
}

func (f *filler) str() string {
	var sb strings.Builder
	for range f.r.IntN(5) {
		switch f.r.IntN(8) {
		case 0:
			for {
				if r := rune(f.r.Int32N(utf8.MaxRune + 1)); utf8.ValidRune(r) {
					sb.WriteRune(r)
					break
				}
			}
		case 1:
			if f.badUTF8 && f.r.IntN(4) == 0 {
				sb.WriteString([]string{"\xff", "\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80"}[f.r.IntN(4)])
			}
		default:
			sb.WriteString(stringPieces[f.r.IntN(len(stringPieces))])
		}
	}
	return sb.String()
}

func (f *filler) timestampSeconds() int64 {
	if f.badTime && f.r.IntN(6) == 0 {
		return []int64{minTimestampSeconds - 1, maxTimestampSeconds + 1, math.MinInt64, math.MaxInt64}[f.r.IntN(4)]
	}
	switch f.r.IntN(4) {
	case 0:
		return []int64{minTimestampSeconds, maxTimestampSeconds, 0, -1}[f.r.IntN(4)]
	case 1:
		return f.r.Int64N(maxTimestampSeconds-minTimestampSeconds+1) + minTimestampSeconds
	}
	return 1_700_000_000 + f.r.Int64N(100_000_000)
}

func (f *filler) nanos() int32 {
	if f.badTime && f.r.IntN(6) == 0 {
		return []int32{-1, 1_000_000_000, math.MaxInt32}[f.r.IntN(3)]
	}
	switch f.r.IntN(5) {
	case 0:
		return 0
	case 1:
		return f.r.Int32N(1000) * 1_000_000
	case 2:
		return f.r.Int32N(1_000_000) * 1000
	case 3:
		return 999_999_999
	}
	return f.r.Int32N(1_000_000_000)
}

// anyContent is what a random google.protobuf.Any holds: a message of
// the API (whose 64-bit integers stay strings inside the Any), or a
// well-known type.
func (f *filler) anyContent(depth int) proto.Message {
	// What an Any holds went through binary encoding, which refuses
	// what badUTF8 makes.
	f = &filler{r: f.r, messages: 4}
	switch f.r.IntN(4) {
	case 0:
		return timestamppb.New(time.Unix(f.r.Int64N(1e10), f.r.Int64N(1e9)))
	case 1:
		return wrapperspb.Int64(f.r.Int64())
	case 2:
		return &nexusv1.SledZoneListResponse{Generation: f.r.Uint64(), PushError: f.str()}
	}
	inst := &nexusv1.Instance{}
	if depth < fillDepth {
		f.fill(inst.ProtoReflect(), depth+1)
	}
	return inst
}

func newFiller(seed uint64) *filler {
	return &filler{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), messages: 30}
}

// TestOxideJSONMarshalMatchesTwoPass holds the one-pass writer to the
// two-pass pipeline it replaced, for every message of the external API,
// zero, nil and filled at random, and for the test-only types with every
// kind of field.
func TestOxideJSONMarshalMatchesTwoPass(t *testing.T) {
	check := func(t *testing.T, types []protoreflect.MessageType, random int) {
		for _, mt := range types {
			t.Run(string(mt.Descriptor().FullName()), func(t *testing.T) {
				checkMatchesTwoPass(t, mt.New().Interface())
				// A nil message pointer, as a response_body field can be.
				checkMatchesTwoPass(t, mt.Zero().Interface())
				for seed := range uint64(random) {
					msg := mt.New()
					newFiller(seed).fill(msg, 0)
					if !checkMatchesTwoPass(t, msg.Interface()) {
						_, err := OxideJSON{}.Marshal(msg.Interface())
						t.Fatalf("a valid message was refused: %v\nmessage: %v", err, msg)
					}
				}
			})
		}
	}
	t.Run("external", func(t *testing.T) { check(t, externalMessages(t), 40) })
	t.Run("rich", func(t *testing.T) { check(t, richTypes, 150) })
	t.Run("well-known", func(t *testing.T) {
		check(t, []protoreflect.MessageType{
			(*timestamppb.Timestamp)(nil).ProtoReflect().Type(),
			(*durationpb.Duration)(nil).ProtoReflect().Type(),
			(*structpb.Struct)(nil).ProtoReflect().Type(),
			(*emptypb.Empty)(nil).ProtoReflect().Type(),
			(*wrapperspb.UInt64Value)(nil).ProtoReflect().Type(),
			(*anypb.Any)(nil).ProtoReflect().Type(),
			(*fieldmaskpb.FieldMask)(nil).ProtoReflect().Type(),
		}, 20)
	})
}

// TestOxideJSONMarshalRefusesAsTwoPass: invalid UTF-8, timestamps out of
// RFC 3339's range and missing required fields are refused as before.
func TestOxideJSONMarshalRefusesAsTwoPass(t *testing.T) {
	types := append(externalMessages(t), richTypes...)
	var refused, encoded int
	for seed := range uint64(400) {
		mt := types[seed%uint64(len(types))]
		msg := mt.New()
		f := newFiller(seed)
		f.badUTF8, f.badTime = true, true
		f.fill(msg, 0)
		if checkMatchesTwoPass(t, msg.Interface()) {
			encoded++
		} else {
			refused++
		}
	}
	if refused == 0 || encoded == 0 {
		t.Fatalf("%d refused, %d encoded: the random messages do not test refusals", refused, encoded)
	}
	for _, mt := range richTypes {
		if mt.Descriptor().Name() == "Legacy" {
			if _, err := (OxideJSON{}).Marshal(mt.New().Interface()); err == nil {
				t.Fatalf("a Legacy without its required id encoded")
			}
		}
	}
}

// TestOxideJSONMarshalForm pins the bytes for one instance: proto names
// in declaration order, 64-bit integers as numbers, timestamps as
// protojson writes them, unset optional fields left out, and strings
// escaped as encoding/json escapes them.
func TestOxideJSONMarshalForm(t *testing.T) {
	inst := &nexusv1.Instance{
		Id:                            "7b0c5f0e-3f6a-4c1e-9a8e-0d1c2b3a4f5e",
		Name:                          "vm",
		Description:                   "a \"b\" <c> & \\ \n\u2028",
		Memory:                        math.MaxUint64,
		Ncpus:                         2,
		RunState:                      "running",
		TimeCreated:                   timestamppb.New(time.Date(2024, 1, 2, 3, 4, 5, 6_000_000, time.UTC)),
		TimeModified:                  timestamppb.New(time.Date(2024, 1, 2, 3, 4, 5, 6_000, time.UTC)),
		TimeRunStateUpdated:           timestamppb.New(time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)),
		AutoRestartEnabled:            true,
		AutoRestartCooldownExpiration: &timestamppb.Timestamp{},
	}
	got, err := OxideJSON{}.Marshal(&nexusv1.InstanceListResponse{Items: []*nexusv1.Instance{inst}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"items":[{"id":"7b0c5f0e-3f6a-4c1e-9a8e-0d1c2b3a4f5e","name":"vm",` +
		`"description":"a \"b\" \u003cc\u003e \u0026 \\ \n\u2028","hostname":"",` +
		`"memory":18446744073709551615,"ncpus":2,"project_id":"","run_state":"running",` +
		`"time_created":"2024-01-02T03:04:05.006Z","time_modified":"2024-01-02T03:04:05.000006Z",` +
		`"time_run_state_updated":"2024-01-02T03:04:05.000000006Z","auto_restart_enabled":true,` +
		`"auto_restart_policy":"","auto_restart_cooldown_expiration":"1970-01-01T00:00:00Z","enable_jumbo_frames":false}]}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// TestOxideJSONMarshalNonProto: other values are encoding/json's, as
// before.
func TestOxideJSONMarshalNonProto(t *testing.T) {
	for _, v := range []any{nil, map[string]any{"b": 1, "a": "<x>"}, []int64{math.MaxInt64}, struct{ N uint64 }{7}} {
		got, err := OxideJSON{}.Marshal(v)
		want, wantErr := json.Marshal(v)
		if !bytes.Equal(got, want) || !errors.Is(err, wantErr) {
			t.Fatalf("%#v: got %s, %v; want %s, %v", v, got, err, want, wantErr)
		}
	}
}

// FuzzOxideJSONMarshalMatchesTwoPass (S6): any message protobuf's binary
// decoding makes of the bytes, of any type of the external API or the
// test-only ones, encodes as the two-pass pipeline encoded it.
func FuzzOxideJSONMarshalMatchesTwoPass(f *testing.F) {
	types := append(externalMessages(f), richTypes...)
	for i, mt := range types {
		for seed := range uint64(3) {
			msg := mt.New()
			newFiller(seed).fill(msg, 1)
			data, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg.Interface())
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), data)
		}
	}
	unmarshal := proto.UnmarshalOptions{AllowPartial: true, Resolver: richExtension}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		msg := types[int(which)%len(types)].New().Interface()
		if err := unmarshal.Unmarshal(data, msg); err != nil {
			return
		}
		checkMatchesTwoPass(t, msg)
	})
}
