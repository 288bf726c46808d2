package gateway

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/pkg/apierror"
)

// Oxide's error codes (SPEC N9) and the HTTP status each comes with.
var oxideStatus = map[string]int{
	"ObjectNotFound":       http.StatusNotFound,
	"ObjectAlreadyExists":  http.StatusBadRequest,
	"InvalidRequest":       http.StatusBadRequest,
	"InvalidValue":         http.StatusBadRequest,
	"Unauthorized":         http.StatusUnauthorized,
	"Forbidden":            http.StatusForbidden,
	"Conflict":             http.StatusConflict,
	"ServiceNotAvailable":  http.StatusServiceUnavailable,
	"InsufficientCapacity": http.StatusInsufficientStorage,
	"Internal":             http.StatusInternalServerError,
}

// oxideCodes is the one table from gRPC codes to Oxide error codes.
var oxideCodes = map[codes.Code]string{
	codes.InvalidArgument:    "InvalidRequest",
	codes.OutOfRange:         "InvalidRequest",
	codes.NotFound:           "ObjectNotFound",
	codes.AlreadyExists:      "ObjectAlreadyExists",
	codes.Unauthenticated:    "Unauthorized",
	codes.PermissionDenied:   "Forbidden",
	codes.FailedPrecondition: "Conflict",
	codes.Aborted:            "Conflict",
	codes.Unavailable:        "ServiceNotAvailable",
	codes.DeadlineExceeded:   "ServiceNotAvailable",
	codes.ResourceExhausted:  "InsufficientCapacity",
}

// ErrorCode returns the Oxide error code and HTTP status for a gRPC error.
// A status whose ErrorInfo (in this project's domain) names an Oxide code
// picks that code, so the app layer can say "InvalidValue" where the
// default would be "InvalidRequest".
func ErrorCode(st *status.Status) (string, int) {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == apierror.Domain {
			if httpStatus, ok := oxideStatus[info.GetReason()]; ok {
				return info.GetReason(), httpStatus
			}
		}
	}
	code, ok := oxideCodes[st.Code()]
	if !ok {
		code = "Internal"
	}
	return code, oxideStatus[code]
}

type errorBody struct {
	RequestID string `json:"request_id"`
	ErrorCode string `json:"error_code,omitempty"`
	Message   string `json:"message"`
}

func writeError(w http.ResponseWriter, r *http.Request, httpStatus int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(errorBody{RequestID: RequestID(r.Context()), ErrorCode: code, Message: message}) //nolint:errcheck // the client went away
}

func handleError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	st := status.Convert(err)
	code, httpStatus := ErrorCode(st)
	message := st.Message()
	if httpStatus == http.StatusInternalServerError {
		// Internal details stay in the log, under the same request id.
		message = "Internal Server Error"
	}
	writeError(w, r, httpStatus, code, message)
}

func handleRoutingError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	if httpStatus == http.StatusMethodNotAllowed {
		writeError(w, r, httpStatus, "MethodNotAllowed", "method not allowed")
		return
	}
	writeError(w, r, http.StatusNotFound, "ObjectNotFound", "no such path: "+r.URL.Path)
}
