package gateway

import (
	"context"
	_ "embed"
	"net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
)

// OpenAPI is the OpenAPI 3 document of the REST API, as served at GET
// /openapi.json: written by openapi3gen from protoc-gen-openapiv2's
// Swagger 2 document, corrected to what the gateway sends.
//
//go:embed openapi/nexus.openapi.json
var OpenAPI []byte

// RequestIDHeader carries a request's id, on the HTTP response and as gRPC
// metadata to the handlers.
const RequestIDHeader = "x-request-id"

type requestIDKey struct{}

// RequestID returns the id the gateway gave the request.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// New returns the REST handler, forwarding to NexusExternal over conn:
// nexus passes an in-process channel (pkg/inprocgrpc), which runs the gRPC
// server's interceptors without a transport.
func New(ctx context.Context, conn grpc.ClientConnInterface, opts ...Option) (http.Handler, error) {
	set := settings{maxBody: DefaultMaxBody, bodyTimeout: DefaultBodyTimeout, log: zap.NewNop()}
	for _, opt := range opts {
		opt(&set)
	}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, OxideJSON{}),
		runtime.WithErrorHandler(handleError),
		runtime.WithRoutingErrorHandler(handleRoutingError),
		runtime.WithMiddlewares(recordRoute),
		runtime.WithMetadata(func(ctx context.Context, _ *http.Request) metadata.MD {
			if pattern, ok := runtime.HTTPPathPattern(ctx); ok {
				setRoute(ctx, pattern)
			}
			return metadata.Pairs(RequestIDHeader, RequestID(ctx))
		}),
		runtime.WithForwardResponseOption(setStatus),
		// gRPC metadata is nexus's business, not the client's.
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		// grpc-gateway passes Authorization on as "authorization" by
		// itself (mapping it here too would send it twice); of the other
		// headers only If-Match reaches the handlers, the precondition of
		// an instance update (N15).
		runtime.WithIncomingHeaderMatcher(func(h string) (string, bool) {
			if strings.EqualFold(h, "If-Match") {
				return "if-match", true // read by the InstanceUpdate handler (api.IfMatchKey)
			}
			return "", false
		}),
	)
	if err := nexusv1.RegisterNexusExternalHandlerClient(ctx, mux, nexusv1.NewNexusExternalClient(conn)); err != nil {
		return nil, err
	}
	// Not an http.ServeMux: it answers a path with "//", "/./" or "/../"
	// with a redirect the document does not list; the API's router answers
	// it 404 in the error envelope.
	top := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/openapi.json" || r.Method != http.MethodGet {
			mux.ServeHTTP(w, r)
			return
		}
		setRoute(r.Context(), "/openapi.json")
		w.Header().Set("Content-Type", "application/json")
		w.Write(OpenAPI) //nolint:errcheck // the client went away
	})
	return withRequestID(recoverPanics(observe(guard(top, set), set.observers), set.log)), nil
}

func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := uuid.NewString()
		w.Header().Set(RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// successStatus is the HTTP status of a success where Oxide's API answers
// other than 200: 201 for a create, 204 (no body) for a delete, 202 for an
// instance state change that is under way. The gateway owns the HTTP
// contract; the gRPC handlers never see it.
var successStatus = map[string]int{
	nexusv1.NexusExternal_ProjectCreate_FullMethodName:                http.StatusCreated,
	nexusv1.NexusExternal_ProjectDelete_FullMethodName:                http.StatusNoContent,
	nexusv1.NexusExternal_InstanceCreate_FullMethodName:               http.StatusCreated,
	nexusv1.NexusExternal_AccessTokenCreate_FullMethodName:            http.StatusCreated,
	nexusv1.NexusExternal_InstanceDelete_FullMethodName:               http.StatusNoContent,
	nexusv1.NexusExternal_CurrentUserAccessTokenDelete_FullMethodName: http.StatusNoContent,
	nexusv1.NexusExternal_AccessTokenDelete_FullMethodName:            http.StatusNoContent,
	nexusv1.NexusExternal_InstanceStart_FullMethodName:                http.StatusAccepted,
	nexusv1.NexusExternal_InstanceStop_FullMethodName:                 http.StatusAccepted,
	nexusv1.NexusExternal_InstanceReboot_FullMethodName:               http.StatusAccepted,
}

// SuccessStatus is the HTTP status the gateway answers a success of the
// NexusExternal method fullMethod (such as
// "/omicron.nexus.v1.NexusExternal/InstanceCreate") with; the OpenAPI
// document is written from it.
func SuccessStatus(fullMethod string) int {
	if code, ok := successStatus[fullMethod]; ok {
		return code
	}
	return http.StatusOK
}

func setStatus(ctx context.Context, w http.ResponseWriter, _ proto.Message) error {
	method, ok := runtime.RPCMethod(ctx)
	if !ok {
		return nil
	}
	if code := SuccessStatus(method); code != http.StatusOK {
		w.WriteHeader(code)
	}
	return nil
}
