package racktest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"

	"github.com/rackplane/rackplane/pkg/testutil"
)

// requestTimeout bounds one REST request of a test.
const requestTimeout = time.Minute

// Client calls a nexus replica's REST API with a bearer token: the one
// REST helper of the tests.
type Client struct {
	// URL is the REST API's base URL.
	URL string
	// Token is sent as "Authorization: Bearer <Token>"; none when empty.
	Token string
	HTTP  *http.Client
}

// NewClient returns a client of the API at url with token, with a
// connection pool sized for concurrent callers. In a test binary its
// exchanges are checked against nexus's OpenAPI document (openapi.go).
func NewClient(url, token string) *Client {
	return &Client{URL: url, Token: token, HTTP: &http.Client{Timeout: requestTimeout,
		Transport: checked(&http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute})}}
}

// Through is the same client with its requests sent through wrap's
// RoundTripper, wrapped around its own (a checker of another document,
// say); so is the SDK it gives.
func (c *Client) Through(wrap func(http.RoundTripper) http.RoundTripper) *Client {
	out := *c
	out.HTTP = &http.Client{Timeout: c.HTTP.Timeout, Transport: wrap(c.transport())}
	return &out
}

func (c *Client) transport() http.RoundTripper {
	if c.HTTP.Transport != nil {
		return c.HTTP.Transport
	}
	return http.DefaultTransport
}

// As is the same client with another token.
func (c *Client) As(token string) *Client {
	out := *c
	out.Token = token
	return &out
}

// Response is what the API answered.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v.
func (r Response) JSON(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("decoding %d %s: %w", r.Status, r.Body, err)
	}
	return nil
}

// Error is an Oxide error body (SPEC N9).
type Error struct {
	RequestID string `json:"request_id"`
	ErrorCode string `json:"error_code"`
	Message   string `json:"message"`
}

// Error decodes the body as an Oxide error; the zero Error when it is not
// one.
func (r Response) Error() Error {
	var e Error
	json.Unmarshal(r.Body, &e) //nolint:errcheck // not an error body: zero
	return e
}

// Do sends a request with body (JSON; none when empty) to path (under URL,
// or a full URL). It fails no test, so that concurrent workers may use it.
func (c *Client) Do(ctx context.Context, method, path, body string) (Response, error) {
	return c.DoWith(ctx, method, path, body, nil)
}

// DoWith is Do with more request headers.
func (c *Client) DoWith(ctx context.Context, method, path, body string, headers map[string]string) (Response, error) {
	url := path
	if !strings.HasPrefix(path, "http://") && !strings.HasPrefix(path, "https://") {
		url = c.URL + path
	}
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, reader)
	if err != nil {
		return Response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, err
}

// Expect is Do expecting one of the statuses given; any other is an error
// naming the request and carrying the body. It fails no test.
func (c *Client) Expect(ctx context.Context, method, path, body string, want ...int) (Response, error) {
	r, err := c.Do(ctx, method, path, body)
	if err != nil {
		return r, fmt.Errorf("%s %s: %w", method, path, err)
	}
	for _, w := range want {
		if r.Status == w {
			return r, nil
		}
	}
	return r, fmt.Errorf("%s %s: %d %s", method, path, r.Status, r.Body)
}

// List reads every page of the listing at path (which holds its query,
// such as ?limit=1000), following next_page, and decodes the items.
func List[T any](ctx context.Context, c *Client, path string) ([]T, error) {
	var all []T
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	for token := ""; ; {
		page := path
		if token != "" {
			page += sep + "page_token=" + url.QueryEscape(token)
		}
		r, err := c.Expect(ctx, http.MethodGet, page, "", http.StatusOK)
		if err != nil {
			return nil, err
		}
		var body struct {
			Items    []T     `json:"items"`
			NextPage *string `json:"next_page"`
		}
		if err := r.JSON(&body); err != nil {
			return nil, err
		}
		all = append(all, body.Items...)
		if body.NextPage == nil || *body.NextPage == "" || len(body.Items) == 0 {
			return all, nil
		}
		token = *body.NextPage
	}
}

// Call is Do for a test: no answer fails it.
func (c *Client) Call(t testutil.TB, method, path, body string) Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(forTest(context.Background(), t), requestTimeout)
	defer cancel()
	r, err := c.Do(ctx, method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// MustCall is Call expecting one of the statuses given.
func (c *Client) MustCall(t testutil.TB, method, path, body string, want ...int) Response {
	t.Helper()
	r := c.Call(t, method, path, body)
	for _, w := range want {
		if r.Status == w {
			return r
		}
	}
	t.Fatalf("%s %s: %d %s; want %v", method, path, r.Status, r.Body, want)
	return r
}

// SDK is the Oxide Go SDK against the same API as the same caller, over
// this client's transport; t is the test of its calls.
func (c *Client) SDK(t testutil.TB) *oxide.Client {
	t.Helper()
	sdk, err := oxide.NewClient(oxide.WithHost(c.URL), oxide.WithToken(c.Token),
		oxide.WithHTTPClient(&http.Client{Timeout: requestTimeout, Transport: testTransport{t: t, base: c.transport()}}))
	if err != nil {
		t.Fatal(err)
	}
	return sdk
}
