package agent

import (
	"context"
	"errors"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// Classify names the class (agentapi.Class*) of an error from the store or
// the fetcher: what the API answers, and the label of the errors metric. It
// stays with the engine because it knows the store's and fetcher's errors.
func Classify(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, model.ErrInvalidRef), errors.Is(err, model.ErrUnsafeKey),
		errors.Is(err, model.ErrInvalidManifest), errors.Is(err, model.ErrInvalidPattern), errors.Is(err, fetch.ErrUnknownSource), errors.Is(err, fetch.ErrLimit), errors.Is(err, agentapi.ErrInvalid):
		return agentapi.ClassInvalid
	case errors.Is(err, fetch.ErrNotFound), errors.Is(err, cache.ErrNotFound), errors.Is(err, agentapi.ErrNotFound):
		return agentapi.ClassNotFound
	case errors.Is(err, fetch.ErrAccessDenied), errors.Is(err, agentapi.ErrAccessDenied):
		return agentapi.ClassAccessDenied
	// A source that answers nonsense (a wrong range, bad JSON) is a storage
	// problem to its users, not a bug of the agent.
	case errors.Is(err, fetch.ErrUnreachable), errors.Is(err, source.ErrProtocol), errors.Is(err, agentapi.ErrUnreachable):
		return agentapi.ClassUnreachable
	case errors.Is(err, cache.ErrNoSpace), errors.Is(err, cache.ErrTooLarge), errors.Is(err, agentapi.ErrNoSpace):
		return agentapi.ClassNoSpace
	case errors.Is(err, cache.ErrPinned), errors.Is(err, agentapi.ErrPinned):
		return agentapi.ClassPinned
	case errors.Is(err, fetch.ErrChanged), errors.Is(err, agentapi.ErrChanged):
		return agentapi.ClassChanged
	case errors.Is(err, cache.ErrLocked), errors.Is(err, context.Canceled), errors.Is(err, agentapi.ErrUnavailable):
		return agentapi.ClassUnavailable
	}
	return agentapi.ClassInternal
}
