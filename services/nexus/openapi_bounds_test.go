package nexus_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/rackplane/rackplane/services/nexus/gateway"
	"github.com/rackplane/rackplane/services/racktest"
)

// N15: the served document says what the wire does. A list's limit the
// document allows (it declares no maximum) must not be refused as bad
// input; or the document must declare the maximum the server enforces.
func TestN15_AListLimitTheDocumentAllowsIsNotRefused(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(gateway.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	r := racktest.StartInProcess(t, racktest.Options{Sleds: 1})
	admin := r.Client(racktest.FleetAdmin)
	for _, path := range []string{"/v1/projects", "/v1/system/hardware/sleds", "/v1/me/access-tokens", "/v1/system/access-tokens"} {
		var limit *openapi3.Schema
		for _, p := range doc.Paths.Value(path).Get.Parameters {
			if p.Value.Name == "limit" {
				limit = p.Value.Schema.Value
			}
		}
		if limit == nil {
			t.Fatalf("GET %s has no limit in the document", path)
		}
		allowed := uint64(1001)
		if limit.Max != nil && uint64(*limit.Max) < allowed {
			continue // the document says the bound
		}
		resp := admin.Call(t, http.MethodGet, path+"?limit="+strconv.FormatUint(allowed, 10), "")
		if resp.Status == http.StatusBadRequest {
			t.Errorf("GET %s?limit=%d, which the document allows (maximum %v), answered 400: %s", path, allowed, limit.Max, resp.Body)
		}
	}
}

// N15, N9: every answer of the gateway is one the document lists: a
// success, or a 4XX/5XX with Oxide's error envelope. net/http's ServeMux
// (the gateway's top mux, for /openapi.json) answers a path with "//", "."
// or ".." itself with a 307 to the cleaned path and no body, which the
// document does not list and Oxide's API never sends.
func TestN15_AnUncleanPathIsAnsweredWithTheErrorEnvelopeNotARedirect(t *testing.T) {
	r := racktest.StartInProcess(t, racktest.Options{Sleds: 1})
	admin := r.Client(racktest.FleetAdmin)
	admin.MustCall(t, http.MethodPost, "/v1/projects", `{"name":"keep","description":""}`, http.StatusCreated)

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"//v1/projects/keep", "/v1/./projects/keep", "/v1/instances/../projects/keep"} {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodDelete, r.Nexus(0).ExternalURL()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+admin.Token)
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var envelope struct {
			RequestID string `json:"request_id"`
			Message   string `json:"message"`
		}
		isEnvelope := json.Unmarshal(body, &envelope) == nil && envelope.RequestID != "" && envelope.Message != ""
		if resp.StatusCode/100 == 3 || (resp.StatusCode >= 400 && !isEnvelope) {
			t.Errorf("DELETE %s answered %d (Location %q) %q; want 204 or a 4XX with the error envelope",
				path, resp.StatusCode, resp.Header.Get("Location"), strings.TrimSpace(string(body)))
		}
	}
}
