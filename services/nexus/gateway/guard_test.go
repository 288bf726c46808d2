package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SPEC 7: a REST handler that panics is answered 500 with the request id,
// and the panic is logged; its text never reaches the client.
func TestSPEC7_ARESTHandlerPanicIsAnswered500WithTheRequestID(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := withRequestID(recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("the secret is swordfish")
	}), zap.New(core)))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/projects", nil))
	var body errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusInternalServerError || body.RequestID == "" || body.RequestID != rec.Header().Get(RequestIDHeader) ||
		strings.Contains(rec.Body.String(), "swordfish") {
		t.Fatalf("a panicking handler answered %d %s", rec.Code, rec.Body)
	}
	if logs.FilterMessage("http handler panicked").Len() != 1 {
		t.Fatalf("the panic was not logged: %v", logs.All())
	}
}

// SPEC 7: when authenticating a request fails inside nexus (its database,
// say), the client gets 500 with the request id, not the error's text.
func TestSPEC7_AnAuthenticationThatFailsInternallyLeaksNothing(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	set := settings{maxBody: DefaultMaxBody, bodyTimeout: DefaultBodyTimeout, log: zap.New(core),
		authenticate: func(context.Context, string) error {
			return status.Error(codes.Internal, "failed to connect to host=10.0.0.7 user=nexus")
		}}
	h := withRequestID(guard(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Fatal("the handler ran")
	}), set))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/projects", strings.NewReader(`{"name": "p"}`)))
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "10.0.0.7") ||
		!strings.Contains(rec.Body.String(), rec.Header().Get(RequestIDHeader)) {
		t.Fatalf("answered %d %s", rec.Code, rec.Body)
	}
	if logs.FilterMessage("refusing a request on an internal error").Len() != 1 {
		t.Fatalf("the internal error was not logged: %v", logs.All())
	}
}
