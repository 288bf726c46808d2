package racktest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/nexus/gateway"
	"github.com/rackplane/rackplane/services/racktest/openapicheck"
)

// In a test binary (Main), every REST exchange of a Client, raw or through
// the SDK, is checked against the document nexus serves (N15), so that
// every suite's real traffic proves the document. A mismatch fails the
// test that made the call (Call, MustCall, SDK), when it ends; one made
// with no test (Do, Expect, List) fails the binary at its end.

// apiCheck is nil outside test binaries: benchmark commands check nothing.
var apiCheck *openapicheck.Checker

// checkServedDocument turns the checks on, for Main.
func checkServedDocument() error {
	c, err := openapicheck.New(gateway.OpenAPI, openapicheck.Only(servedByGateway))
	if err != nil {
		return fmt.Errorf("racktest: nexus's OpenAPI document: %w", err)
	}
	apiCheck = c
	return nil
}

// servedByGateway: the gateway tags every answer with a request id; the
// other listeners a test calls (metrics) are not the REST API.
func servedByGateway(_ *http.Request, header http.Header) bool {
	return header.Get(gateway.RequestIDHeader) != ""
}

// checked is base with the document's checks, when they are on.
func checked(base http.RoundTripper) http.RoundTripper {
	if apiCheck == nil {
		return base
	}
	return apiCheck.Transport(base, report)
}

// mismatches collects a test's mismatches, or (test nil) those of calls
// made with no test.
type mismatches struct {
	mu     sync.Mutex
	closed bool
	list   []openapicheck.Exchange
}

var (
	sinksMu sync.Mutex
	sinks   = map[testutil.TB]*mismatches{}
	// orphans are the mismatches of calls no test was named for, or made
	// after their test ended.
	orphans mismatches
)

type sinkKey struct{}

// forTest returns ctx naming t as the test of the calls made with it.
func forTest(ctx context.Context, t testutil.TB) context.Context {
	return context.WithValue(ctx, sinkKey{}, sinkFor(t))
}

// sinkFor returns t's collector, which reports what it holds when t ends.
func sinkFor(t testutil.TB) *mismatches {
	sinksMu.Lock()
	defer sinksMu.Unlock()
	if s, ok := sinks[t]; ok {
		return s
	}
	s := &mismatches{}
	sinks[t] = s
	t.Cleanup(func() {
		sinksMu.Lock()
		delete(sinks, t)
		sinksMu.Unlock()
		for _, e := range s.close() {
			t.Errorf("the REST exchange disagrees with nexus's OpenAPI document: %v", e)
		}
	})
	return s
}

// report files a checked exchange's mismatches with the test its context
// names, else with the orphans.
func report(ctx context.Context, e openapicheck.Exchange) {
	if len(e.Problems) == 0 {
		return
	}
	if s, ok := ctx.Value(sinkKey{}).(*mismatches); ok && s.add(e) {
		return
	}
	orphans.add(e)
}

// add keeps e unless the test already ended.
func (m *mismatches) add(e openapicheck.Exchange) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.list = append(m.list, e)
	return true
}

func (m *mismatches) close() []openapicheck.Exchange {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return m.list
}

// reportOrphans writes the mismatches no test reported to w, for Main, and
// says whether there were any.
func reportOrphans(w io.Writer) bool {
	list := orphans.close()
	for _, e := range list {
		fmt.Fprintf(w, "racktest: a REST exchange made outside any test disagrees with nexus's OpenAPI document: %v\n", e)
	}
	return len(list) > 0
}

// testTransport names t as the test of every call made through it.
type testTransport struct {
	t    testutil.TB
	base http.RoundTripper
}

func (tt testTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return tt.base.RoundTrip(req.WithContext(forTest(req.Context(), tt.t)))
}
