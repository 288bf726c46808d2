package gateway

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The writer below is protojson (proto names, unpopulated fields emitted)
// with the one change OxideJSON makes, 64-bit integers as JSON numbers,
// done in one pass: the JSON it writes decodes to the tree the former
// protojson, decode, fix, re-encode pipeline produced (marshaler tests
// hold it to that pipeline). Where that pipeline left protojson's form
// alone (google.protobuf messages, map fields, and fields it could not
// find by the key protojson wrote), the writer keeps protojson's form:
// it hands messages there to protojson, and writes 64-bit integers there
// as strings.

// marshalMessage is OxideJSON.Marshal for a message.
func marshalMessage(msg proto.Message) ([]byte, error) {
	bp := bufPool.Get().(*[]byte)
	b, err := appendMessage((*bp)[:0], msg.ProtoReflect())
	if err == nil {
		// protojson refuses a message missing proto2 required fields.
		err = proto.CheckInitialized(msg)
	}
	var out []byte
	if err == nil {
		out = bytes.Clone(b)
	} else {
		b = *bp
	}
	if cap(b) <= maxPooledBuffer {
		*bp = b[:0]
		bufPool.Put(bp)
	}
	return out, err
}

// A pooled buffer, copied out at the end, costs one allocation per
// response instead of one per doubling of the buffer.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBuffer keeps one huge list response from pinning its buffer.
const maxPooledBuffer = 1 << 20

// messageForm is how a message (not a field of one) is written.
type messageForm uint8

const (
	// formFields: field by field, by the writer.
	formFields messageForm = iota
	// formProtoJSON: a google.protobuf message, in protojson's own form
	// (Timestamp, Duration, Struct, wrappers, Any …).
	formProtoJSON
	// formTwoPass: a message with extension ranges (proto2 or editions;
	// none in the external API). The former pipeline left its extensions
	// in protojson's form and refused a MessageSet; running that pipeline
	// on it keeps both without a second writer for them.
	formTwoPass
)

type messagePlan struct {
	form   messageForm
	fields []fieldPlan
}

type fieldPlan struct {
	fd protoreflect.FieldDescriptor
	// key is `"name":`.
	key []byte
	// oneof: unset, protojson leaves it out (a proto3 optional field is in
	// a synthetic oneof); presence: unset, it is null.
	oneof, presence bool
	// protoJSONForm: the former pipeline left this field's value as
	// protojson wrote it: a map, a group, or a field it did not find by
	// its key.
	protoJSONForm bool
}

// plans holds a messagePlan per message descriptor: the descriptors of
// the generated types, so it stays as small as the API.
var plans sync.Map // protoreflect.MessageDescriptor -> *messagePlan

func planFor(md protoreflect.MessageDescriptor) *messagePlan {
	if p, ok := plans.Load(md); ok {
		return p.(*messagePlan)
	}
	p := &messagePlan{form: formFields}
	switch {
	case md.FullName().Parent() == "google.protobuf":
		p.form = formProtoJSON
	case md.ExtensionRanges().Len() > 0:
		p.form = formTwoPass
	default:
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			name := fd.TextName()
			key, _ := appendString(nil, name)
			// The former pipeline found a field by the key protojson wrote,
			// by name then by JSON name, and fixed 64-bit integers under
			// message fields only, not under groups.
			found := fields.ByName(protoreflect.Name(name))
			if found == nil {
				found = fields.ByJSONName(name)
			}
			p.fields = append(p.fields, fieldPlan{
				fd:            fd,
				key:           append(key, ':'),
				oneof:         fd.ContainingOneof() != nil,
				presence:      fd.HasPresence(),
				protoJSONForm: found != fd || fd.IsMap() || fd.Kind() == protoreflect.GroupKind,
			})
		}
	}
	actual, _ := plans.LoadOrStore(md, p)
	return actual.(*messagePlan)
}

func appendMessage(b []byte, m protoreflect.Message) ([]byte, error) {
	if ts, ok := m.Interface().(*timestamppb.Timestamp); ok {
		// Most messages of the API carry timestamps; protojson's encoder
		// setup costs more than the timestamp.
		return appendTimestamp(b, ts)
	}
	p := planFor(m.Descriptor())
	switch p.form {
	case formProtoJSON:
		return encode.MarshalAppend(b, m.Interface())
	case formTwoPass:
		out, err := marshalTwoPass(m.Interface())
		if err != nil {
			return nil, err
		}
		return append(b, out...), nil
	}
	b = append(b, '{')
	start := len(b)
	for i := range p.fields {
		f := &p.fields[i]
		var v protoreflect.Value
		if m.Has(f.fd) {
			v = m.Get(f.fd)
		} else if f.oneof {
			continue
		} else if !f.presence {
			v = m.Get(f.fd)
		}
		if len(b) > start {
			b = append(b, ',')
		}
		b = append(b, f.key...)
		var err error
		if b, err = appendValue(b, v, f.fd, f.protoJSONForm); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// appendValue writes v, the value of fd (invalid for null); protoJSON
// selects protojson's form for it: 64-bit integers as strings, messages
// written by protojson.
func appendValue(b []byte, v protoreflect.Value, fd protoreflect.FieldDescriptor, protoJSON bool) ([]byte, error) {
	var err error
	switch {
	case !v.IsValid():
		return append(b, "null"...), nil
	case fd.IsList():
		list := v.List()
		b = append(b, '[')
		for i := range list.Len() {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendSingular(b, list.Get(i), fd, protoJSON); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case fd.IsMap():
		return appendMap(b, v.Map(), fd)
	}
	return appendSingular(b, v, fd, protoJSON)
}

func appendSingular(b []byte, v protoreflect.Value, fd protoreflect.FieldDescriptor, protoJSON bool) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), nil
	case protoreflect.StringKind:
		out, ok := appendString(b, v.String())
		if !ok {
			return nil, invalidUTF8(fd)
		}
		return out, nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if protoJSON {
			b = append(b, '"')
			return append(strconv.AppendInt(b, v.Int(), 10), '"'), nil
		}
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if protoJSON {
			b = append(b, '"')
			return append(strconv.AppendUint(b, v.Uint(), 10), '"'), nil
		}
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.FloatKind:
		return appendFloat(b, v.Float(), 32), nil
	case protoreflect.DoubleKind:
		return appendFloat(b, v.Float(), 64), nil
	case protoreflect.BytesKind:
		b = append(b, '"')
		return append(base64.StdEncoding.AppendEncode(b, v.Bytes()), '"'), nil
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return append(b, "null"...), nil
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			out, _ := appendString(b, string(ev.Name()))
			return out, nil
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if protoJSON {
			return encode.MarshalAppend(b, v.Message().Interface())
		}
		return appendMessage(b, v.Message())
	}
	return nil, fmt.Errorf("%s has unknown kind %v", fd.FullName(), fd.Kind())
}

// appendMap writes a map field in protojson's form, the former pipeline
// never having looked into maps; keys in protojson's order.
func appendMap(b []byte, mp protoreflect.Map, fd protoreflect.FieldDescriptor) ([]byte, error) {
	keys := make([]protoreflect.MapKey, 0, mp.Len())
	mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	switch fd.MapKey().Kind() {
	case protoreflect.BoolKind:
		slices.SortFunc(keys, func(x, y protoreflect.MapKey) int {
			return compareBool(x.Bool(), y.Bool())
		})
	case protoreflect.StringKind:
		slices.SortFunc(keys, func(x, y protoreflect.MapKey) int {
			return cmp.Compare(x.String(), y.String())
		})
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		slices.SortFunc(keys, func(x, y protoreflect.MapKey) int {
			return cmp.Compare(x.Uint(), y.Uint())
		})
	default:
		slices.SortFunc(keys, func(x, y protoreflect.MapKey) int {
			return cmp.Compare(x.Int(), y.Int())
		})
	}
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		var ok bool
		if b, ok = appendString(b, k.String()); !ok {
			return nil, invalidUTF8(fd)
		}
		b = append(b, ':')
		if b, err = appendSingular(b, mp.Get(k), fd.MapValue(), true); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

func compareBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case !x:
		return -1
	}
	return 1
}

func invalidUTF8(fd protoreflect.FieldDescriptor) error {
	return fmt.Errorf("proto: field %v contains invalid UTF-8", fd.FullName())
}

// The range of google.protobuf.Timestamp's JSON form, years 1 to 9999.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

// appendTimestamp writes ts as protojson does: RFC 3339 in UTC, with 0,
// 3, 6 or 9 fractional digits.
func appendTimestamp(b []byte, ts *timestamppb.Timestamp) ([]byte, error) {
	secs, nanos := ts.GetSeconds(), int64(ts.GetNanos())
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos > 999_999_999 {
		// For protojson's error.
		return encode.MarshalAppend(b, ts)
	}
	b = append(b, '"')
	b = time.Unix(secs, 0).UTC().AppendFormat(b, "2006-01-02T15:04:05")
	if nanos != 0 {
		digits := 9
		switch {
		case nanos%1_000_000 == 0:
			nanos, digits = nanos/1_000_000, 3
		case nanos%1_000 == 0:
			nanos, digits = nanos/1_000, 6
		}
		var frac [9]byte
		for i := digits - 1; i >= 0; i-- {
			frac[i] = byte('0' + nanos%10)
			nanos /= 10
		}
		b = append(append(b, '.'), frac[:digits]...)
	}
	return append(b, 'Z', '"'), nil
}

// appendFloat writes n as protojson does: encoding/json's number form,
// and the strings "NaN", "Infinity" and "-Infinity" where JSON has no
// number.
func appendFloat(b []byte, n float64, bitSize int) []byte {
	switch {
	case math.IsNaN(n):
		return append(b, `"NaN"`...)
	case math.IsInf(n, +1):
		return append(b, `"Infinity"`...)
	case math.IsInf(n, -1):
		return append(b, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(n); abs != 0 {
		if bitSize == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bitSize == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, n, format, -1, bitSize)
	if format == 'e' {
		// 1e-07 as 1e-7.
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendString writes s as a JSON string, escaped as encoding/json
// escapes it (the former pipeline's last step), so that HTML-significant
// characters stay escaped in responses as before. It reports false for
// invalid UTF-8, which protojson refuses.
func appendString(b []byte, s string) ([]byte, bool) {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if plainASCII[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return b, false
		}
		if r == '\u2028' || r == '\u2029' {
			// Valid JSON, but line terminators to JavaScript.
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			start = i + size
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"'), true
}

// plainASCII marks the ASCII bytes a JSON string holds as they are.
var plainASCII = func() (t [utf8.RuneSelf]bool) {
	for c := range t {
		t[c] = c >= ' ' && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()
