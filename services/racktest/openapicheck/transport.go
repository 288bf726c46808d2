package openapicheck

import (
	"bytes"
	"context"
	"io"
	"net/http"
)

// Transport returns a RoundTripper that sends each request through base
// and gives observe the exchange, checked, with the request's context,
// before the caller sees the answer. Both bodies are read whole, and
// handed on as they came.
func (c *Checker) Transport(base http.RoundTripper, observe func(context.Context, Exchange)) http.RoundTripper {
	return &transport{checker: c, base: base, observe: observe}
}

type transport struct {
	checker *Checker
	base    http.RoundTripper
	observe func(context.Context, Exchange)
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		if reqBody, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
		// A RoundTripper must not change the caller's request.
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	t.observe(req.Context(), t.checker.Check(req, reqBody, resp.StatusCode, resp.Header, body))
	return resp, nil
}
