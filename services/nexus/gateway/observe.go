package gateway

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.uber.org/zap"
)

// UnmatchedRoute is the route of a request that no route matched.
const UnmatchedRoute = "unmatched"

// Observer is told about every REST request once it is answered: its
// method, the route pattern that took it (such as
// "/v1/instances/{instance}/start", or UnmatchedRoute; never the raw path,
// so that metrics keep a bounded label set), the HTTP status and how long
// the answer took.
type Observer func(method, route string, code int, elapsed time.Duration)

// Option configures the gateway.
type Option func(*settings)

type settings struct {
	observers    []Observer
	authenticate Authenticator
	maxBody      int64
	bodyTimeout  time.Duration
	log          *zap.Logger
}

// WithObserver adds an observer of every request.
func WithObserver(o Observer) Option {
	return func(s *settings) { s.observers = append(s.observers, o) }
}

// route is where the mux writes the pattern of the route that took a
// request. Only the request's own goroutine touches it.
type route struct{ pattern string }

type routeKey struct{}

// setRoute records the route that took the request of ctx.
func setRoute(ctx context.Context, pattern string) {
	if r, ok := ctx.Value(routeKey{}).(*route); ok {
		r.pattern = pattern
	}
}

// recordRoute is a mux middleware: it runs for every request a route
// matched, before the generated handler. The handler's context is not yet
// annotated there, so it takes the matched pattern's own form
// ("{instance=*}" → "{instance}"); the metadata annotator then overwrites
// it with the declared template (runtime.HTTPPathPattern).
func recordRoute(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if p, ok := runtime.HTTPPattern(r.Context()); ok {
			setRoute(r.Context(), strings.ReplaceAll(p.String(), "=*}", "}"))
		}
		next(w, r, params)
	}
}

// observe calls the observers once h has answered.
func observe(h http.Handler, observers []Observer) http.Handler {
	if len(observers) == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rt := &route{pattern: UnmatchedRoute}
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), routeKey{}, rt)))
		elapsed := time.Since(start)
		code := rec.code
		if code == 0 {
			code = http.StatusOK
		}
		for _, o := range observers {
			o(r.Method, rt.pattern, code, elapsed)
		}
	})
}

// statusRecorder remembers the status a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Flush passes through, for handlers that stream.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
