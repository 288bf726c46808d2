package api

import (
	"context"
	"errors"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/sledagent/ledger"
	"github.com/rackplane/rackplane/services/sledagent/vmm"
)

// Reasons carried in google.rpc.ErrorInfo, part of the API contract.
const (
	ReasonGenerationOutdated                 = "GENERATION_OUTDATED"
	ReasonConfigChangedWithoutGenerationBump = "CONFIG_CHANGED_WITHOUT_GENERATION_BUMP"
	// ReasonNoSuchVMM is the only answer that means "this VMM is gone".
	ReasonNoSuchVMM            = "NO_SUCH_VMM"
	ReasonVMMAlreadyExists     = "VMM_ALREADY_EXISTS"
	ReasonVMMTargetUnreachable = "VMM_TARGET_UNREACHABLE"
)

// toStatus is the one place where domain errors become gRPC statuses.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var (
		verr     *apierror.ValidationError
		rejected *ledger.RejectedError
	)
	switch {
	case errors.As(err, &verr):
		return apierror.InvalidArgument(verr)
	case errors.As(err, &rejected):
		reason := ReasonGenerationOutdated
		if errors.Is(rejected, ledger.ErrConfigChangedWithoutGenerationBump) {
			reason = ReasonConfigChangedWithoutGenerationBump
		}
		return apierror.WithReason(codes.FailedPrecondition, reason, rejected.Error(), map[string]string{
			"ledgered_generation":  strconv.FormatUint(rejected.Ledgered, 10),
			"requested_generation": strconv.FormatUint(rejected.Requested, 10),
		})
	case errors.Is(err, vmm.ErrNoSuchVMM):
		return apierror.WithReason(codes.NotFound, ReasonNoSuchVMM, err.Error(), nil)
	case errors.Is(err, vmm.ErrAlreadyExists):
		return apierror.WithReason(codes.AlreadyExists, ReasonVMMAlreadyExists, err.Error(), nil)
	case errors.Is(err, vmm.ErrUnreachableTarget):
		return apierror.WithReason(codes.FailedPrecondition, ReasonVMMTargetUnreachable, err.Error(), nil)
	case errors.Is(err, ledger.ErrNotDurable):
		return status.Error(codes.Unavailable, err.Error())
	case isStatus(err):
		// Already a status: an injected fault answers with the code asked for.
		return err
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func isStatus(err error) bool {
	_, ok := status.FromError(err)
	return ok
}
