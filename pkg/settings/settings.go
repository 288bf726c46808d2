package settings

import (
	"encoding"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// Spec says how a service's settings are found.
type Spec struct {
	// EnvPrefix starts the name of every environment variable, like
	// "RACKPLANE_NEXUS_".
	EnvPrefix string
	// RelativeToFile names the keys whose values in a file are paths
	// relative to that file; get reads the file's value of any key ("" when
	// the file does not set it).
	RelativeToFile func(get func(key string) string) []string
	// Environ lists the environment (os.Environ when nil).
	Environ func() []string
}

// Loader reads the settings of type T for one command line.
type Loader[T any] struct {
	spec       Spec
	defaults   T
	fs         *pflag.FlagSet
	configPath string
	fields     []field
}

// field is one setting: its key, its flag and where it lives in T.
type field struct {
	key   string
	flag  string
	help  string
	index []int
	typ   reflect.Type
}

// Bind registers --config and one flag per setting of T on fs, each
// defaulting to the value in defaults, and returns the loader that reads
// them once fs is parsed.
func Bind[T any](fs *pflag.FlagSet, spec Spec, defaults T) *Loader[T] {
	l := &Loader[T]{spec: spec, defaults: defaults, fs: fs}
	fs.StringVar(&l.configPath, "config", "", "YAML or JSON config file; the environment ("+spec.EnvPrefix+
		"<KEY>) overrides it, and flags given explicitly override both")
	def := reflect.ValueOf(defaults)
	l.fields = fieldsOf(def.Type())
	for _, f := range l.fields {
		if f.flag != "-" {
			fs.Var(newFlagValue(def.FieldByIndex(f.index)), f.flag, f.help)
		}
	}
	return l
}

// fieldsOf lists the settings of a settings struct type.
func fieldsOf(t reflect.Type) []field {
	var fields []field
	for i := range t.NumField() {
		sf := t.Field(i)
		key := sf.Tag.Get("koanf")
		if key == "" || !sf.IsExported() {
			continue
		}
		f := field{key: key, flag: strings.ReplaceAll(key, "_", "-"), help: sf.Tag.Get("help"), index: sf.Index, typ: sf.Type}
		if name, ok := sf.Tag.Lookup("flag"); ok {
			f.flag = name
		}
		fields = append(fields, f)
	}
	return fields
}

// Args is the command line that gives cfg to a command whose flags Bind
// registered over defaults: a flag for each setting whose value differs
// from the default (a list flag once per item).
func Args[T any](cfg, defaults T) []string {
	var args []string
	c, d := reflect.ValueOf(cfg), reflect.ValueOf(defaults)
	for _, f := range fieldsOf(c.Type()) {
		value := c.FieldByIndex(f.index)
		if f.flag == "-" || reflect.DeepEqual(value.Interface(), d.FieldByIndex(f.index).Interface()) {
			continue
		}
		if value.Kind() == reflect.Slice {
			for i := range value.Len() {
				args = append(args, "--"+f.flag+"="+fmt.Sprint(value.Index(i).Interface()))
			}
			continue
		}
		if value.Kind() == reflect.Map {
			for _, k := range sortedKeys(value) {
				args = append(args, "--"+f.flag+"="+k+"="+fmt.Sprint(value.MapIndex(reflect.ValueOf(k)).Interface()))
			}
			continue
		}
		args = append(args, "--"+f.flag+"="+(&flagValue{value: value}).String())
	}
	return args
}

// Load layers the defaults, the file, the environment and the flags given
// into a T. Validation is the service's.
func (l *Loader[T]) Load() (T, error) {
	out := l.defaults
	k := koanf.New(".")
	if l.configPath != "" {
		fromFile := koanf.New(".")
		if err := fromFile.Load(file.Provider(l.configPath), yaml.Parser()); err != nil {
			return out, fmt.Errorf("%s: %w", l.configPath, err)
		}
		l.relativeTo(fromFile, filepath.Dir(l.configPath))
		if err := k.Merge(fromFile); err != nil {
			return out, err
		}
		// Unknown keys are refused here, before the other layers, so the
		// message names the file.
		if err := unmarshal(fromFile, &out); err != nil {
			return out, fmt.Errorf("%s: %w", l.configPath, err)
		}
	}
	environ := l.spec.Environ
	if environ == nil {
		environ = os.Environ
	}
	if err := k.Load(env.Provider(".", env.Opt{Prefix: l.spec.EnvPrefix, EnvironFunc: environ,
		TransformFunc: l.fromEnv}), nil); err != nil {
		return out, err
	}
	for _, f := range l.fields {
		if fl := l.fs.Lookup(f.flag); f.flag != "-" && fl != nil && fl.Changed {
			if err := k.Set(f.key, fl.Value.(*flagValue).value.Interface()); err != nil {
				return out, err
			}
		}
	}
	out = l.defaults
	if err := unmarshal(k, &out); err != nil {
		return out, err
	}
	return out, nil
}

// fromEnv maps PREFIX_SOME_KEY to some_key, for known keys only, and splits
// lists on commas.
func (l *Loader[T]) fromEnv(name, value string) (string, any) {
	key := strings.ToLower(strings.TrimPrefix(name, l.spec.EnvPrefix))
	for _, f := range l.fields {
		if f.key != key {
			continue
		}
		items := splitList(value)
		switch f.typ.Kind() {
		case reflect.Slice:
			return key, items
		case reflect.Map:
			entries := map[string]any{}
			for _, item := range items {
				k, v, _ := strings.Cut(item, "=")
				entries[k] = v
			}
			return key, entries
		}
		return key, value
	}
	return "", nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var items []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

// relativeTo makes the file's relative paths relative to dir.
func (l *Loader[T]) relativeTo(k *koanf.Koanf, dir string) {
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	if l.spec.RelativeToFile == nil {
		return
	}
	for _, key := range l.spec.RelativeToFile(k.String) {
		switch v := k.Get(key).(type) {
		case string:
			k.Set(key, rel(v)) //nolint:errcheck // a string set on a flat key cannot fail
		case []any:
			paths := make([]string, len(v))
			for i, p := range v {
				paths[i] = rel(fmt.Sprint(p))
			}
			k.Set(key, paths) //nolint:errcheck // as above
		}
	}
}

func unmarshal[T any](k *koanf.Koanf, out *T) error {
	return k.UnmarshalWithConf("", out, koanf.UnmarshalConf{Tag: "koanf", DecoderConfig: &mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.TextUnmarshallerHookFunc(),
		Result:           out,
		TagName:          "koanf",
		WeaklyTypedInput: true,
		ErrorUnused:      true,
	}})
}

// flagValue is a flag bound to a copy of one setting, parsed the way the
// setting's type parses text.
type flagValue struct {
	value reflect.Value
	// set: the flag was given, so a list flag given again appends
	// rather than replacing the default.
	set bool
}

func newFlagValue(def reflect.Value) *flagValue {
	v := reflect.New(def.Type()).Elem()
	v.Set(def)
	return &flagValue{value: v}
}

func (f *flagValue) String() string {
	if !f.value.IsValid() {
		return ""
	}
	if f.value.Kind() == reflect.Map {
		parts := make([]string, 0, f.value.Len())
		for _, k := range sortedKeys(f.value) {
			parts = append(parts, k+"="+fmt.Sprint(f.value.MapIndex(reflect.ValueOf(k)).Interface()))
		}
		return strings.Join(parts, ",")
	}
	if s, ok := f.value.Interface().(fmt.Stringer); ok {
		return s.String()
	}
	if f.value.Kind() == reflect.Slice {
		parts := make([]string, f.value.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(f.value.Index(i).Interface())
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(f.value.Interface())
}

// Set parses one occurrence of the flag; a list flag appends, and may also
// be given comma-separated; a map flag takes key=value pairs the same way.
func (f *flagValue) Set(s string) error {
	if f.value.Kind() == reflect.Map {
		if !f.set || f.value.IsNil() {
			f.value.Set(reflect.MakeMap(f.value.Type()))
			f.set = true
		}
		for _, item := range splitList(s) {
			k, v, ok := strings.Cut(item, "=")
			if !ok || k == "" {
				return fmt.Errorf("%q is not key=value", item)
			}
			elem := reflect.New(f.value.Type().Elem()).Elem()
			if err := parseInto(elem, v); err != nil {
				return err
			}
			f.value.SetMapIndex(reflect.ValueOf(k), elem)
		}
		return nil
	}
	if f.value.Kind() == reflect.Slice {
		if !f.set {
			f.value.Set(reflect.Zero(f.value.Type()))
			f.set = true
		}
		for _, item := range strings.Split(s, ",") {
			elem := reflect.New(f.value.Type().Elem()).Elem()
			if err := parseInto(elem, item); err != nil {
				return err
			}
			f.value.Set(reflect.Append(f.value, elem))
		}
		return nil
	}
	return parseInto(f.value, s)
}

func (f *flagValue) Type() string {
	switch f.value.Kind() {
	case reflect.Slice:
		return "strings"
	case reflect.Map:
		return "key=value"
	}
	return f.value.Type().Name()
}

// sortedKeys are a string-keyed map's keys in order.
func sortedKeys(m reflect.Value) []string {
	keys := make([]string, 0, m.Len())
	for _, k := range m.MapKeys() {
		keys = append(keys, k.String())
	}
	slices.Sort(keys)
	return keys
}

// parseInto sets v from text, through its UnmarshalText if it has one.
func parseInto(v reflect.Value, s string) error {
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(s))
	}
	return mapstructure.WeakDecode(s, v.Addr().Interface())
}
