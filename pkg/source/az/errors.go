package az

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/modelcache/modelcache/pkg/source"
)

// classify turns what the SDK (or the network) returned into a
// source.Error: the service's answer by its status and error code, a
// request that got no answer as unreachable, a listing over its bound as a
// limit, anything else as nonsense.
func (c *Client) classify(ctx context.Context, where, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var se *source.Error
	if errors.As(err, &se) {
		return err
	}
	var re *azcore.ResponseError
	var ce *credentialError
	switch {
	case errors.As(err, &re):
		return c.statusError(where, op, re.StatusCode, re.ErrorCode)
	case errors.As(err, &ce):
		return &source.Error{Class: source.ErrAccessDenied, Where: where, Op: op, Msg: "no usable Entra ID token", Err: ce.err}
	case errors.Is(err, errTooLarge):
		return &source.Error{Class: source.ErrLimit, Where: where, Op: op,
			Msg: fmt.Sprintf("a listing page of more than %d bytes", c.o.MaxPageBytes)}
	case unreachable(err):
		return &source.Error{Class: source.ErrUnreachable, Temporary: true, Where: where, Op: op, Msg: "no answer from " + c.service, Err: err}
	}
	return &source.Error{Class: source.ErrProtocol, Where: where, Op: op, Msg: "the service's answer makes no sense", Err: err}
}

// unreachable: the request got no (whole) answer.
func unreachable(err error) bool {
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// statusError words a non-success status and the service's error code
// (x-ms-error-code: ContainerNotFound, AuthorizationFailure, …).
func (c *Client) statusError(where, op string, status int, code string) error {
	e := &source.Error{Where: where, Op: op}
	code = source.Clean(code)
	switch {
	case status == 401 || status == 403:
		e.Class = source.ErrAccessDenied
		e.Msg = fmt.Sprintf("%d: refused with %s at %s (a wrong or expired credential, or one without read and list permission here)", status, c.creds, c.service)
		if c.creds == "no credentials" {
			e.Msg = fmt.Sprintf("%d: not readable anonymously at %s (is the container public?)", status, c.service)
		}
	case status == 404:
		e.Class = source.ErrNotFound
		switch code {
		case "ContainerNotFound":
			e.Msg = fmt.Sprintf("404: no such container at %s", c.service)
		case "BlobNotFound":
			e.Msg = "404: the blob is gone; list the model again"
		default:
			e.Msg = fmt.Sprintf("404: not found at %s (no such account, container or blob)", c.service)
		}
	case status == 412 || status == 416:
		// If-Match failed, or the blob is now shorter than the range.
		e.Class = source.ErrChanged
		e.Msg = fmt.Sprintf("%d: the blob was changed since it was listed; list the model again", status)
	case status == 409 && (code == "BlobArchived" || code == "BlobBeingRehydrated"):
		e.Class = source.ErrNotFound
		e.Msg = "409: the blob is in the archive tier; rehydrate it to hot or cool first"
	case status == 429 || status >= 500:
		e.Class, e.Temporary = source.ErrUnreachable, true
		e.Msg = fmt.Sprintf("%d from %s", status, c.service)
	default:
		e.Class = source.ErrProtocol
		e.Msg = fmt.Sprintf("unexpected %d from %s", status, c.service)
	}
	if code != "" {
		e.Msg += " (" + code + ")"
	}
	return e
}
