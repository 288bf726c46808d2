package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// SPEC 7: a REST handler that panics is answered 500 with the request id,
// and the panic is logged; its text never reaches the client.
func TestSPEC7_ARESTHandlerPanicIsAnswered500WithTheRequestID(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := withRequestID(recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("the secret is 42")
	}), zap.New(core)))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/projects", nil))
	var body errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusInternalServerError || body.RequestID == "" || body.RequestID != rec.Header().Get(RequestIDHeader) ||
		strings.Contains(rec.Body.String(), "42") {
		t.Fatalf("a panicking handler answered %d %s", rec.Code, rec.Body)
	}
	if logs.FilterMessage("http handler panicked").Len() != 1 {
		t.Fatalf("the panic was not logged: %v", logs.All())
	}
}
