package openapicheck

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// document is a small API in the served document's shape: Oxide's error
// envelope for 4XX and 5XX, a bearer token, and Oxide's Name pattern.
const document = `{
  "openapi": "3.0.3",
  "info": {"title": "t", "version": "1"},
  "security": [{"bearer": []}],
  "paths": {
    "/v1/things": {
      "post": {
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ThingCreate"}}}},
        "responses": {
          "201": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
          "4XX": {"$ref": "#/components/responses/Error"}
        }
      }
    }
  },
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "responses": {"Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
    "schemas": {
      "Error": {"type": "object", "required": ["request_id", "message"],
        "properties": {"request_id": {"type": "string"}, "error_code": {"type": "string"}, "message": {"type": "string"}}},
      "Name": {"type": "string",
        "pattern": "^(?![0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$)^[a-z]([a-zA-Z0-9-]*[a-zA-Z0-9]+)?$"},
      "ThingCreate": {"type": "object", "required": ["name", "size"],
        "properties": {"name": {"$ref": "#/components/schemas/Name"}, "size": {"type": "integer", "format": "uint32", "minimum": 0}}},
      "Thing": {"type": "object", "required": ["id", "name"],
        "properties": {"id": {"type": "string", "format": "uuid"}, "name": {"type": "string"}}}
    }
  }
}`

const errorBody = `{"request_id":"r","error_code":"InvalidRequest","message":"no"}`

// exchange sends body to path on a server answering status and answer
// through a Transport of document, and returns what the transport saw.
func exchange(t *testing.T, path, body string, status int, answer string, opts ...Option) Exchange {
	t.Helper()
	c, err := New([]byte(document), opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got, _ := io.ReadAll(r.Body); string(got) != body {
			t.Errorf("the server got %q, want %q as sent", got, body)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer) //nolint:errcheck // the test reads what arrived
	}))
	defer srv.Close()
	var (
		mu  sync.Mutex
		saw []Exchange
	)
	client := &http.Client{Transport: c.Transport(http.DefaultTransport, func(_ context.Context, e Exchange) {
		mu.Lock()
		defer mu.Unlock()
		saw = append(saw, e)
	})}
	resp, err := client.Post(srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got, _ := io.ReadAll(resp.Body); string(got) != answer {
		t.Fatalf("the caller got %q, want %q as answered", got, answer)
	}
	if len(saw) != 1 {
		t.Fatalf("observed %d exchanges, want 1", len(saw))
	}
	return saw[0]
}

func TestAnExchangeAsTheDocumentSaysHasNoProblems(t *testing.T) {
	e := exchange(t, "/v1/things", `{"name":"a-thing","size":3}`, http.StatusCreated,
		`{"id":"7c3a8e0a-5d2b-4b8e-9a51-0d6c2f4e1b90","name":"a-thing"}`)
	if len(e.Problems) != 0 || e.Operation() != "POST /v1/things" {
		t.Fatalf("%v (operation %q)", e, e.Operation())
	}
}

func TestAStatusOrABodyTheDocumentDoesNotListIsAMismatch(t *testing.T) {
	for answer, status := range map[string]int{
		`{"id":"7c3a8e0a-5d2b-4b8e-9a51-0d6c2f4e1b90","name":"a-thing"}`: http.StatusOK,
		`{"id":"not-a-uuid","name":"a-thing"}`:                           http.StatusCreated,
		`{"name":"a-thing"}`:                                             http.StatusCreated,
		`{"message":"no request id"}`:                                    http.StatusBadRequest,
	} {
		if e := exchange(t, "/v1/things", `{"name":"a-thing","size":3}`, status, answer); len(e.Problems) == 0 {
			t.Errorf("%d %s passed", status, answer)
		}
	}
}

// An invalid request is a mismatch when the server accepted it, not when
// it refused it: a test of bad input sends one on purpose.
func TestAnInvalidRequestIsAMismatchOnlyWhenTheServerAcceptedIt(t *testing.T) {
	for _, body := range []string{`{"name":"a-thing","size":-1}`, `{"name":"Not_A_Name","size":1}`, `{"size":1}`} {
		if e := exchange(t, "/v1/things", body, http.StatusBadRequest, errorBody); len(e.Problems) != 0 {
			t.Errorf("%s refused: %v", body, e)
		}
		e := exchange(t, "/v1/things", body, http.StatusCreated, `{"id":"7c3a8e0a-5d2b-4b8e-9a51-0d6c2f4e1b90","name":"x"}`)
		if len(e.Problems) != 1 || !strings.Contains(e.Problems[0].Error(), "request") {
			t.Errorf("%s accepted: %v, want one request problem", body, e)
		}
	}
}

// Oxide's Name forbids a UUID with a look-ahead Go's regexp lacks; the
// checker means it all the same.
func TestOxidesNamePatternIsCheckedAsItMeans(t *testing.T) {
	for name, valid := range map[string]bool{"a-thing": true, "aB3": true, "a-": false, "3a": false,
		"e7fb3bfa-8a24-42e6-b400-44085ef408b5": false, "e7fb3bfa-8a24-42e6-b400-44085ef408b5x": true} {
		e := exchange(t, "/v1/things", `{"name":"`+name+`","size":1}`, http.StatusCreated, `{"id":"7c3a8e0a-5d2b-4b8e-9a51-0d6c2f4e1b90","name":"x"}`)
		if got := len(e.Problems) == 0; got != valid {
			t.Errorf("name %q: valid %v, want %v (%v)", name, got, valid, e)
		}
	}
	hostname := lookarounds[`^([a-zA-Z0-9]+[a-zA-Z0-9\-]*(?<!-))(\.[a-zA-Z0-9]+[a-zA-Z0-9\-]*(?<!-))*$`]
	for name, valid := range map[string]bool{"vm": true, "1st-vm": true, "vm.example.com": true, "vm-": false, "-vm": false, "vm..x": false, "vm-.x": false} {
		if got := hostname.MatchString(name); got != valid {
			t.Errorf("hostname %q: valid %v, want %v", name, got, valid)
		}
	}
}

// A route the document lacks must not exist; checking against another
// API's document leaves such routes alone.
func TestARouteTheDocumentLacksMustAnswer404WithTheErrorEnvelope(t *testing.T) {
	if e := exchange(t, "/v1/other", `{}`, http.StatusNotFound, errorBody); len(e.Problems) != 0 || e.Operation() != "" {
		t.Errorf("404 with the envelope: %v", e)
	}
	for status, answer := range map[int]string{http.StatusOK: `{}`, http.StatusNotFound: `{"detail":"nope"}`} {
		if e := exchange(t, "/v1/other", `{}`, status, answer); len(e.Problems) == 0 {
			t.Errorf("%d %s passed", status, answer)
		}
		if e := exchange(t, "/v1/other", `{}`, status, answer, OtherRoutesUnchecked()); len(e.Problems) != 0 {
			t.Errorf("%d %s with other routes unchecked: %v", status, answer, e)
		}
	}
}

func TestAnExchangeOutOfScopeIsNotChecked(t *testing.T) {
	never := Only(func(*http.Request, http.Header) bool { return false })
	if e := exchange(t, "/v1/things", `{"size":1}`, http.StatusOK, `nonsense`, never); len(e.Problems) != 0 || e.Route != "" {
		t.Errorf("out of scope: %v", e)
	}
}
