package apierror

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
)

// Domain is the ErrorInfo domain of every reason this project defines.
const Domain = "rackplane.omicron"

// FieldViolation is one problem with one field of a request. Field is a path
// such as "config.zones[2].id".
type FieldViolation struct {
	Field       string
	Description string
}

// ValidationError reports every problem found in a request at once.
type ValidationError struct {
	Violations []FieldViolation
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Field + ": " + v.Description
	}
	return "invalid request: " + strings.Join(parts, "; ")
}

// Violations collects field problems; its zero value is ready to use.
type Violations struct {
	list []FieldViolation
}

// Add records a problem with field.
func (v *Violations) Add(field, format string, args ...any) {
	v.list = append(v.list, FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// UUID parses field's value as a canonical (36-character, hyphenated) UUID,
// recording a problem and returning uuid.Nil when it is not one.
func (v *Violations) UUID(field, s string) uuid.UUID {
	if s == "" {
		v.Add(field, "is required")
		return uuid.Nil
	}
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		v.Add(field, "%q is not a UUID", s)
		return uuid.Nil
	}
	return id
}

// Len returns how many problems have been recorded.
func (v *Violations) Len() int { return len(v.list) }

// Err returns a *ValidationError holding every recorded problem, or nil.
func (v *Violations) Err() error {
	if len(v.list) == 0 {
		return nil
	}
	return &ValidationError{Violations: append([]FieldViolation(nil), v.list...)}
}

// InvalidArgument turns a validation error into INVALID_ARGUMENT with one
// google.rpc.BadRequest field violation per problem.
func InvalidArgument(verr *ValidationError) error {
	br := &errdetails.BadRequest{}
	for _, v := range verr.Violations {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       v.Field,
			Description: v.Description,
		})
	}
	return withDetails(status.New(codes.InvalidArgument, verr.Error()), br)
}

// WithReason builds a status whose google.rpc.ErrorInfo carries reason and
// metadata, so that callers can branch on the reason rather than the text.
func WithReason(code codes.Code, reason, message string, metadata map[string]string) error {
	return withDetails(status.New(code, message), &errdetails.ErrorInfo{
		Reason:   reason,
		Domain:   Domain,
		Metadata: metadata,
	})
}

func withDetails(st *status.Status, detail protoadapt.MessageV1) error {
	withDetail, err := st.WithDetails(detail)
	if err != nil {
		// Only an unmarshalable detail fails here, which would be a bug in
		// this package; the bare status still carries the code and message.
		return st.Err()
	}
	return withDetail.Err()
}

// Reason returns the ErrorInfo reason an error carries, or "".
func Reason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// FieldViolations returns the BadRequest field violations an error carries.
func FieldViolations(err error) []FieldViolation {
	var verr *ValidationError
	if errors.As(err, &verr) {
		return verr.Violations
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	var out []FieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	return out
}
