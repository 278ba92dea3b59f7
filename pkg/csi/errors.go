package csi

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelcache/modelcache/pkg/agentapi"
)

// agentStatus turns an agent error into the gRPC status kubelet acts on:
// Unavailable and Aborted make it retry soon, the others back off and show
// the message in the pod's events. This is the only place agent errors
// become gRPC codes.
func agentStatus(what string, err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, agentapi.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, agentapi.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, agentapi.ErrAccessDenied):
		code = codes.PermissionDenied
	case errors.Is(err, agentapi.ErrNoSpace):
		code = codes.ResourceExhausted
	case errors.Is(err, agentapi.ErrChanged):
		code = codes.Aborted
	case errors.Is(err, agentapi.ErrUnreachable), errors.Is(err, agentapi.ErrUnavailable):
		code = codes.Unavailable
	}
	return status.Errorf(code, "%s: %v", what, err)
}
