package agent

import (
	"context"
	"errors"
	"net/http"

	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// Error classes cross the socket as strings; the client turns them back into
// these sentinels so callers (the CSI plugin, the CLI) branch with errors.Is
// without importing the store or the fetcher.
var (
	ErrInvalid      = errors.New("invalid request")
	ErrNotFound     = errors.New("not found")
	ErrAccessDenied = errors.New("access denied")
	ErrUnreachable  = errors.New("storage unreachable")
	ErrNoSpace      = errors.New("no space in cache")
	ErrPinned       = errors.New("pinned")
	ErrChanged      = errors.New("object changed during download")
	ErrUnavailable  = errors.New("unavailable, retry")
	ErrInternal     = errors.New("internal error")
)

type class struct {
	name   string
	status int
	err    error
}

var classes = []class{
	{"invalid", http.StatusBadRequest, ErrInvalid},
	{"not_found", http.StatusNotFound, ErrNotFound},
	{"access_denied", http.StatusForbidden, ErrAccessDenied},
	{"unreachable", http.StatusBadGateway, ErrUnreachable},
	{"no_space", http.StatusInsufficientStorage, ErrNoSpace},
	{"pinned", http.StatusConflict, ErrPinned},
	{"changed", http.StatusConflict, ErrChanged},
	{"unavailable", http.StatusServiceUnavailable, ErrUnavailable},
	{"internal", http.StatusInternalServerError, ErrInternal},
}

// Classify names the class of an error from the store or the fetcher; it is
// also the label of the errors metric.
func Classify(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, model.ErrInvalidRef), errors.Is(err, model.ErrUnsafeKey),
		errors.Is(err, model.ErrInvalidManifest), errors.Is(err, fetch.ErrUnknownSource), errors.Is(err, fetch.ErrLimit), errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, fetch.ErrNotFound), errors.Is(err, cache.ErrNotFound), errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, fetch.ErrAccessDenied), errors.Is(err, ErrAccessDenied):
		return "access_denied"
	case errors.Is(err, fetch.ErrUnreachable), errors.Is(err, ErrUnreachable):
		return "unreachable"
	case errors.Is(err, cache.ErrNoSpace), errors.Is(err, cache.ErrTooLarge), errors.Is(err, ErrNoSpace):
		return "no_space"
	case errors.Is(err, cache.ErrPinned), errors.Is(err, ErrPinned):
		return "pinned"
	case errors.Is(err, fetch.ErrChanged), errors.Is(err, ErrChanged):
		return "changed"
	case errors.Is(err, cache.ErrLocked), errors.Is(err, context.Canceled), errors.Is(err, ErrUnavailable):
		return "unavailable"
	}
	return "internal"
}

func classByName(name string) class {
	for _, c := range classes {
		if c.name == name {
			return c
		}
	}
	return classes[len(classes)-1]
}

// apiError is an error the client rebuilt from a response.
type apiError struct {
	msg string
	cls error
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.cls }
