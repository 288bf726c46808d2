package api

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// toStatus is the one place where nexus's domain errors become gRPC
// statuses.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var verr *apierror.ValidationError
	switch {
	case errors.As(err, &verr):
		return apierror.InvalidArgument(verr)
	case errors.Is(err, app.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, authz.ErrForbidden):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, model.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, model.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, model.ErrConflict):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, model.ErrNoCapacity):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, model.ErrInstanceNotStopped):
		return apierror.WithReason(codes.FailedPrecondition, "InvalidRequest", err.Error(), nil)
	case errors.Is(err, model.ErrSameSled):
		return apierror.WithReason(codes.InvalidArgument, "InvalidRequest", err.Error(), nil)
	case errors.Is(err, model.ErrInstanceBusy):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, model.ErrLastReplica):
		return apierror.WithReason(codes.FailedPrecondition, "InvalidRequest", err.Error(), nil)
	case errors.Is(err, model.ErrVMMGone), errors.Is(err, model.ErrSledUnreachable),
		errors.Is(err, model.ErrUpdateInProgress), errors.Is(err, model.ErrReplicaNotActive),
		errors.Is(err, model.ErrDatabaseUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, model.ErrInUse):
		// Oxide answers 400 InvalidRequest for "delete what still holds
		// resources", not 409.
		return apierror.WithReason(codes.FailedPrecondition, "InvalidRequest", err.Error(), nil)
	case sledStatus(err) != nil:
		// A sled-agent's own refusal (a VMM that cannot reach the target
		// state, say) keeps its code.
		return status.Error(sledStatus(err).Code(), err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// sledStatus finds a gRPC status a sled-agent answered inside err.
func sledStatus(err error) *status.Status {
	var withStatus interface{ GRPCStatus() *status.Status }
	if errors.As(err, &withStatus) && withStatus.GRPCStatus().Code() != codes.Unknown {
		return withStatus.GRPCStatus()
	}
	return nil
}
