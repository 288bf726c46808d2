package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"
)

// requestTimeout bounds one request: force-terminate, the slowest, waits
// for an unreachable sled about ten seconds (F7).
const requestTimeout = time.Minute

// pageLimit is the largest page the API serves.
const pageLimit = 1000

// client calls the API: through the Oxide SDK where it covers the call,
// with plain HTTP for this product's extensions. Either way it keeps the
// bodies the API answered, so that -o json prints the API's own objects
// (its extensions to Oxide's types included), not the SDK's re-encoding.
type client struct {
	base    string
	token   string
	http    *http.Client
	sdk     *oxide.Client
	answers *recorder
}

func newClient(cfg config) (*client, error) {
	rec := &recorder{next: http.DefaultTransport}
	c := &client{base: strings.TrimSuffix(cfg.URL, "/"), token: cfg.Token, answers: rec,
		http: &http.Client{Timeout: requestTimeout, Transport: rec}}
	sdk, err := oxide.NewClient(oxide.WithHost(c.base), oxide.WithToken(c.token), oxide.WithHTTPClient(c.http),
		oxide.WithUserAgent("rackctl"))
	if err != nil {
		return nil, err
	}
	c.sdk = sdk
	return c, nil
}

// recorder keeps the body of every successful answer, and the last
// transport error (the SDK flattens it into text).
type recorder struct {
	next    http.RoundTripper
	mu      sync.Mutex
	bodies  [][]byte
	lastErr error
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		r.mu.Lock()
		r.lastErr = err
		r.mu.Unlock()
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return resp, nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	r.mu.Lock()
	r.bodies = append(r.bodies, body)
	r.mu.Unlock()
	return resp, nil
}

// take returns what was recorded since the last take, and forgets it.
func (r *recorder) take() ([][]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	bodies, err := r.bodies, r.lastErr
	r.bodies, r.lastErr = nil, nil
	return bodies, err
}

// viaSDK runs calls of the SDK and returns the bodies the API answered
// them with, one per page of a listing.
func (c *client) viaSDK(call func(*oxide.Client) error) ([][]byte, error) {
	c.answers.take() //nolint:errcheck // forgetting what an earlier call left
	err := call(c.sdk)
	bodies, transportErr := c.answers.take()
	switch {
	case transportErr != nil:
		return nil, c.unreachable(transportErr)
	case err != nil:
		return nil, sdkError(err)
	}
	return bodies, nil
}

// sdkOne is viaSDK for a call answered by one object.
func (c *client) sdkOne(call func(*oxide.Client) error) ([]byte, error) {
	bodies, err := c.viaSDK(call)
	if err != nil || len(bodies) == 0 {
		return nil, err
	}
	return bodies[len(bodies)-1], nil
}

// call sends one request of this product's extensions, with body as JSON
// (none when nil), and returns the answer's body.
func (c *client) call(ctx context.Context, method, path string, body any) ([]byte, error) {
	return c.callWith(ctx, method, path, body, nil)
}

// callWith is call with more request headers.
func (c *client) callWith(ctx context.Context, method, path string, body any, headers map[string]string) ([]byte, error) {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, reader)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", "rackctl")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.unreachable(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, c.unreachable(err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, answerError(resp.StatusCode, data)
	}
	return data, nil
}

// list reads every page of an extension's listing at path (with its
// query, if any), following next_page, and returns the items.
func (c *client) list(ctx context.Context, path string) ([]json.RawMessage, error) {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	var all []json.RawMessage
	for page := path; ; {
		body, err := c.call(ctx, http.MethodGet, page, nil)
		if err != nil {
			return nil, err
		}
		items, next, err := pageOf(body)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == "" || len(items) == 0 {
			return all, nil
		}
		page = path + sep + "page_token=" + url.QueryEscape(next)
	}
}

// pageOf reads one page of a listing.
func pageOf(body []byte) ([]json.RawMessage, string, error) {
	var page struct {
		Items    []json.RawMessage `json:"items"`
		NextPage *string           `json:"next_page"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, "", fmt.Errorf("the API answered a listing that is not one: %w", err)
	}
	if page.NextPage == nil {
		return page.Items, "", nil
	}
	return page.Items, *page.NextPage, nil
}

// items joins the items of the pages an SDK listing read.
func items(pages [][]byte) ([]json.RawMessage, error) {
	var all []json.RawMessage
	for _, body := range pages {
		page, _, err := pageOf(body)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
	}
	return all, nil
}

func (c *client) unreachable(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("cannot reach the API at %s: %w", c.base, err)
}

// apiError is the API's refusal: Oxide's error code and message, the
// HTTP status and the request id to look for in nexus's log.
type apiError struct {
	Status    int
	Code      string
	Message   string
	RequestID string
}

func (e *apiError) Error() string {
	var b strings.Builder
	if e.Code != "" {
		b.WriteString(e.Code + ": ")
	}
	b.WriteString(e.Message)
	fmt.Fprintf(&b, " (HTTP %d", e.Status)
	if e.RequestID != "" {
		b.WriteString(", request " + e.RequestID)
	}
	b.WriteString(")")
	return b.String()
}

// answerError reads Oxide's error envelope; a body that is not one is
// shown as it came.
func answerError(status int, body []byte) error {
	e := &apiError{Status: status}
	var envelope struct {
		RequestID string `json:"request_id"`
		ErrorCode string `json:"error_code"`
		Message   string `json:"message"`
	}
	if json.Unmarshal(body, &envelope) == nil && (envelope.ErrorCode != "" || envelope.Message != "") {
		e.Code, e.Message, e.RequestID = envelope.ErrorCode, envelope.Message, envelope.RequestID
		return e
	}
	e.Message = strings.TrimSpace(string(body))
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// sdkError is the SDK's HTTP error as an apiError.
func sdkError(err error) error {
	var httpErr *oxide.HTTPError
	if !errors.As(err, &httpErr) || httpErr.HTTPResponse == nil {
		return err
	}
	return answerError(httpErr.HTTPResponse.StatusCode, []byte(httpErr.RawBody))
}
