// Package openapicheck holds real HTTP traffic to an OpenAPI 3 document:
// a Checker validates each request and its answer against the document
// (kin-openapi's openapi3filter), and its Transport does so for every
// exchange that passes through it, so that tests find where the API and
// its document disagree. racktest's clients use it in every test binary.
package openapicheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// Checker checks exchanges against one document.
type Checker struct {
	doc         *openapi3.T
	router      routers.Router
	opts        *openapi3filter.Options
	otherRoutes bool
	scope       func(*http.Request, http.Header) bool
}

// Option configures a Checker.
type Option func(*Checker)

// OtherRoutesUnchecked leaves alone a request to a route the document does
// not have: for checking an API against another's document (Oxide's),
// which describes only the part the two share. Without it, such a request
// must be answered 404 or 405 with the document's Error schema.
func OtherRoutesUnchecked() Option { return func(c *Checker) { c.otherRoutes = true } }

// Only checks the exchanges for which in, given the request and the
// answer's header, is true: the others are another server's, which the
// document does not describe.
func Only(in func(req *http.Request, header http.Header) bool) Option {
	return func(c *Checker) { c.scope = in }
}

// New returns a Checker of the OpenAPI 3 document, which must itself be
// valid.
func New(document []byte, opts ...Option) (*Checker, error) {
	doc, err := openapi3.NewLoader().LoadFromData(document)
	if err != nil {
		return nil, fmt.Errorf("loading the OpenAPI document: %w", err)
	}
	if err := doc.Validate(context.Background(), openapi3.SetRegexCompiler(compilePattern)); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is not valid: %w", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	setFormats(doc)
	c := &Checker{doc: doc, router: router, opts: &openapi3filter.Options{
		// A status the document does not list is a mismatch, not a pass.
		IncludeResponseStatus: true,
		MultiError:            true,
		RegexCompiler:         compilePattern,
		// The server checks tokens; the document only says one is needed.
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
		// The path and the reason say enough; the schema is in the document.
		SchemaValidationOptions: append(doc.GetSchemaValidationOptions(), openapi3.DisableSchemaErrorDetails()),
	}}
	for _, opt := range opts {
		opt(c)
	}
	return c, nil
}

// Operations lists the document's operations, as "GET /v1/projects".
func (c *Checker) Operations() []string {
	var out []string
	for _, path := range c.doc.Paths.InMatchingOrder() {
		for method := range c.doc.Paths.Value(path).Operations() {
			out = append(out, method+" "+path)
		}
	}
	slices.Sort(out)
	return out
}

// Exchange is a request and its answer, as checked.
type Exchange struct {
	Method string
	// Path is the request's path; Route the document's path template that
	// matched it, empty when none did.
	Path, Route string
	Status      int
	// Problems are where the exchange and the document disagree.
	Problems []error
}

// Operation is the document's operation the exchange went to, as
// Operations names it; empty when none.
func (e Exchange) Operation() string {
	if e.Route == "" {
		return ""
	}
	return e.Method + " " + e.Route
}

func (e Exchange) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s answered %d", e.Method, e.Path, e.Status)
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n\t%v", p)
	}
	return b.String()
}

// Check checks a request whose body was reqBody and the answer it got.
// The request is held to the document only when the server did not refuse
// it with a 4xx: a test of bad input sends what the document forbids, and
// the server may refuse it for another reason first (no token, an unknown
// project, a body too large); an invalid request the server accepted is a
// mismatch. The answer is always held to the document.
func (c *Checker) Check(req *http.Request, reqBody []byte, status int, header http.Header, body []byte) Exchange {
	e := Exchange{Method: req.Method, Path: req.URL.Path, Status: status}
	if c.scope != nil && !c.scope(req, header) {
		return e
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		if !c.otherRoutes {
			e.Problems = c.checkUnrouted(req, status, header, body)
		}
		return e
	}
	e.Route = route.Path
	in := &openapi3filter.RequestValidationInput{Request: withBody(req, reqBody), PathParams: params, Route: route, Options: c.opts}
	ctx := context.Background()
	if status/100 != 4 {
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			e.Problems = append(e.Problems, fmt.Errorf("request: %w", err))
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: c.opts}
	if err := openapi3filter.ValidateResponse(ctx, out.SetBodyBytes(body)); err != nil {
		e.Problems = append(e.Problems, fmt.Errorf("response: %w", err))
	}
	return e
}

// checkUnrouted: a route the document lacks must not exist: 404, or 405
// for a method the document lacks, with the error envelope.
func (c *Checker) checkUnrouted(req *http.Request, status int, header http.Header, body []byte) []error {
	if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
		return []error{fmt.Errorf("the document has no such route, but the server answered %d", status)}
	}
	envelope := c.doc.Components.Schemas["Error"]
	if envelope == nil {
		return nil
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return []error{fmt.Errorf("response: the error is %q, not JSON", ct)}
	}
	value, err := decodeJSON(body)
	if err == nil {
		err = envelope.Value.VisitJSON(value, c.opts.SchemaValidationOptions...)
	}
	if err != nil {
		return []error{fmt.Errorf("response: not the Error schema: %w", err)}
	}
	return nil
}

func withBody(req *http.Request, body []byte) *http.Request {
	out := req.Clone(context.Background())
	out.Body = io.NopCloser(bytes.NewReader(body))
	if len(body) == 0 {
		out.Body = http.NoBody
	}
	return out
}

var errNoBody = errors.New("no body")

func decodeJSON(body []byte) (any, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errNoBody
	}
	var v any
	return v, json.Unmarshal(body, &v)
}
