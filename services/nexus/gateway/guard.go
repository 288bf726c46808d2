package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/status"
)

// Defaults of a request's limits (SPEC 7).
const (
	DefaultMaxBody     = 1 << 20
	DefaultBodyTimeout = 10 * time.Second
)

// Authenticator checks a request's Authorization header before its body is
// read: nil, or a gRPC status error (Unauthenticated) the gateway answers
// as the API would.
type Authenticator func(ctx context.Context, authorization string) error

// WithAuthenticator makes the gateway authenticate every request that
// carries a body before it reads a byte of it.
func WithAuthenticator(a Authenticator) Option {
	return func(s *settings) { s.authenticate = a }
}

// WithBodyLimits bounds a request body's size (413 beyond it) and the time
// it may take to arrive (408 after it).
func WithBodyLimits(maxBytes int64, timeout time.Duration) Option {
	return func(s *settings) { s.maxBody, s.bodyTimeout = maxBytes, timeout }
}

// WithLogger is where a recovered panic is logged.
func WithLogger(log *zap.Logger) Option {
	return func(s *settings) { s.log = log }
}

// recoverPanics answers a handler's panic with 500 and the request id,
// logging it with its stack, instead of dropping the connection.
func recoverPanics(next http.Handler, log *zap.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v) // the server's own way to abort a response
			}
			log.Error("http handler panicked", zap.String("request_id", RequestID(r.Context())),
				zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Any("panic", v),
				zap.ByteString("stack", debug.Stack()))
			writeError(w, r, http.StatusInternalServerError, "Internal", "Internal Server Error")
		}()
		next.ServeHTTP(w, r)
	})
}

// guard refuses what must never reach a handler (SPEC 7): a second
// Authorization header, and for a request with a body, a caller that
// cannot authenticate (before the body is read), a body over the limit,
// and a body that does not arrive in time. The body is read here, whole,
// so the handlers never wait on a slow client.
func guard(next http.Handler, set settings) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
		// A refusal closes the connection when a body may be unread: the
		// server would otherwise read what is left of it, however slowly
		// it comes, before it answers.
		refuse := func(httpStatus int, code, message string) {
			if hasBody {
				w.Header().Set("Connection", "close")
			}
			if httpStatus == http.StatusInternalServerError {
				set.log.Error("refusing a request on an internal error", zap.String("request_id", RequestID(r.Context())),
					zap.String("error", message))
				code, message = "Internal", "Internal Server Error"
			}
			writeError(w, r, httpStatus, code, message)
		}
		if len(r.Header.Values("Authorization")) > 1 {
			refuse(http.StatusBadRequest, "InvalidRequest", "more than one Authorization header")
			return
		}
		if !hasBody {
			next.ServeHTTP(w, r)
			return
		}
		if set.authenticate != nil {
			if err := set.authenticate(r.Context(), r.Header.Get("Authorization")); err != nil {
				st := status.Convert(err)
				code, httpStatus := ErrorCode(st)
				refuse(httpStatus, code, st.Message())
				return
			}
		}
		tooLarge := fmt.Sprintf("the request body exceeds the limit of %d bytes", set.maxBody)
		if r.ContentLength > set.maxBody {
			refuse(http.StatusRequestEntityTooLarge, "PayloadTooLarge", tooLarge)
			return
		}
		body, err := readBody(w, r, set.maxBody, set.bodyTimeout)
		switch {
		case errors.Is(err, errBodyTooLarge):
			refuse(http.StatusRequestEntityTooLarge, "PayloadTooLarge", tooLarge)
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			refuse(http.StatusRequestTimeout, "RequestTimeout", fmt.Sprintf("the request body did not arrive within %s", set.bodyTimeout))
			return
		case err != nil:
			refuse(http.StatusBadRequest, "InvalidRequest", "reading the request body: "+err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

var errBodyTooLarge = errors.New("request body too large")

// readBody reads at most maxBytes of the body within timeout.
func readBody(w http.ResponseWriter, r *http.Request, maxBytes int64, timeout time.Duration) ([]byte, error) {
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, err
	}
	defer rc.SetReadDeadline(time.Time{}) //nolint:errcheck // as above
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBytes+1))
	if err == nil && int64(len(body)) > maxBytes {
		err = errBodyTooLarge
	}
	return body, err
}
