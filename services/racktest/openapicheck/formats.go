package openapicheck

import (
	"fmt"
	"regexp"

	"github.com/getkin/kin-openapi/openapi3"
)

// compilePattern compiles a schema's pattern with Go's regexp, and the
// patterns Oxide's document writes with look-around assertions, which Go's
// regexp lacks, as the checks they mean.
func compilePattern(expr string) (openapi3.RegexMatcher, error) {
	if m, ok := lookarounds[expr]; ok {
		return m, nil
	}
	return regexp.Compile(expr)
}

// matcherFunc is a RegexMatcher written in Go.
type matcherFunc func(string) bool

func (f matcherFunc) MatchString(s string) bool { return f(s) }

var (
	uuidPattern     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	namePattern     = regexp.MustCompile(`^[a-z]([a-zA-Z0-9-]*[a-zA-Z0-9]+)?$`)
	hostnameLabel   = `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`
	hostnamePattern = regexp.MustCompile(`^` + hostnameLabel + `(\.` + hostnameLabel + `)*$`)
)

// lookarounds are Oxide's patterns with look-arounds (omicron's Name and
// Hostname), by their text.
var lookarounds = map[string]openapi3.RegexMatcher{
	// A name: not a UUID, then a lowercase letter, then letters, digits
	// and '-', not ending with '-'.
	`^(?![0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$)^[a-z]([a-zA-Z0-9-]*[a-zA-Z0-9]+)?$`: matcherFunc(func(s string) bool {
		return !uuidPattern.MatchString(s) && namePattern.MatchString(s)
	}),
	// A hostname: dot-separated labels of letters, digits and '-', each
	// starting with a letter or digit and not ending with '-'.
	`^([a-zA-Z0-9]+[a-zA-Z0-9\-]*(?<!-))(\.[a-zA-Z0-9]+[a-zA-Z0-9\-]*(?<!-))*$`: matcherFunc(hostnamePattern.MatchString),
}

// setFormats makes the document check the formats Oxide's document uses
// beyond OpenAPI's own: UUIDs, and the widths and signs of integers.
func setFormats(doc *openapi3.T) {
	doc.SetStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562))
	for format, bits := range map[string]int{"uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64} {
		doc.SetIntegerFormatValidator(format, openapi3.NewCallbackValidator(func(v int64) error {
			if v < 0 || bits < 64 && v > int64(1)<<bits-1 {
				return fmt.Errorf("%d is not a %d-bit unsigned integer", v, bits)
			}
			return nil
		}))
	}
}
