package api

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/app"
	"github.com/rackplane/rackplane/services/nexus/authz"
	"github.com/rackplane/rackplane/services/nexus/datastore"
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
	case errors.Is(err, datastore.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, datastore.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, datastore.ErrInUse):
		// Oxide answers 400 InvalidRequest for "delete what still holds
		// resources", not 409.
		return apierror.WithReason(codes.FailedPrecondition, "InvalidRequest", err.Error(), nil)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
