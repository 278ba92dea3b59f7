package agentapi

import (
	"errors"
	"net/http"
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

// Names of the error classes on the wire (ErrorResponse.Class,
// Progress.ErrorClass) and in the agent's errors metric.
const (
	ClassInvalid      = "invalid"
	ClassNotFound     = "not_found"
	ClassAccessDenied = "access_denied"
	ClassUnreachable  = "unreachable"
	ClassNoSpace      = "no_space"
	ClassPinned       = "pinned"
	ClassChanged      = "changed"
	ClassUnavailable  = "unavailable"
	ClassInternal     = "internal"
)

type class struct {
	name   string
	status int
	err    error
}

var classes = []class{
	{ClassInvalid, http.StatusBadRequest, ErrInvalid},
	{ClassNotFound, http.StatusNotFound, ErrNotFound},
	{ClassAccessDenied, http.StatusForbidden, ErrAccessDenied},
	{ClassUnreachable, http.StatusBadGateway, ErrUnreachable},
	{ClassNoSpace, http.StatusInsufficientStorage, ErrNoSpace},
	{ClassPinned, http.StatusConflict, ErrPinned},
	{ClassChanged, http.StatusConflict, ErrChanged},
	{ClassUnavailable, http.StatusServiceUnavailable, ErrUnavailable},
	{ClassInternal, http.StatusInternalServerError, ErrInternal},
}

// classByName finds a class; an unknown name (from a newer agent) is internal.
func classByName(name string) class {
	for _, c := range classes {
		if c.name == name {
			return c
		}
	}
	return classes[len(classes)-1]
}

// HTTPStatus is the status an answer of the class name carries; an unknown
// name is answered as internal.
func HTTPStatus(name string) int { return classByName(name).status }

// apiError is an error the client rebuilt from a response.
type apiError struct {
	msg string
	cls error
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.cls }
