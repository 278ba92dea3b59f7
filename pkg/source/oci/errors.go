package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/modelcache/modelcache/pkg/source"
)

// classify turns what oras-go (or the network) returned into a
// source.Error: the registry's answer by its status, a request that got no
// answer as unreachable, anything else as nonsense.
func (c *Client) classify(ctx context.Context, where, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var se *source.Error
	if errors.As(err, &se) {
		return err
	}
	var er *errcode.ErrorResponse
	switch {
	case errors.As(err, &er):
		return c.statusError(where, op, er.StatusCode, er.Errors)
	case errors.Is(err, errdef.ErrSizeExceedsLimit):
		return &source.Error{Class: source.ErrLimit, Where: where, Op: op, Msg: "an answer over a limit", Err: err}
	case errors.Is(err, errdef.ErrNotFound):
		return c.statusError(where, op, 404, nil)
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		return &source.Error{Class: source.ErrAccessDenied, Where: where, Op: op,
			Msg: "the registry asks for a username and password, and none were given"}
	case unreachable(err):
		return &source.Error{Class: source.ErrUnreachable, Temporary: true, Where: where, Op: op, Msg: "no answer", Err: err}
	}
	return &source.Error{Class: source.ErrProtocol, Where: where, Op: op, Msg: "the registry's answer makes no sense", Err: err}
}

// unreachable: the request got no (whole) answer.
func unreachable(err error) bool {
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// statusError words a registry's non-success status; codes are the
// distribution spec's error codes it sent (NAME_UNKNOWN, DENIED, …).
func (c *Client) statusError(where, op string, status int, codes errcode.Errors) error {
	e := &source.Error{Where: where, Op: op}
	switch {
	case status == 401:
		e.Class = source.ErrAccessDenied
		e.Msg = "401: the registry wants credentials (or the repository does not exist: some registries say 401 for that)"
		if c.withCred {
			e.Msg = "401: the registry refused the username and password"
		}
	case status == 403:
		e.Class = source.ErrAccessDenied
		e.Msg = "403: these credentials may not pull from this repository"
		if !c.withCred {
			e.Msg = "403: not allowed anonymously"
		}
	case status == 404:
		e.Class = source.ErrNotFound
		e.Msg = "404: no such repository, tag or digest (or these credentials may not see it)"
		if op == "read" {
			e.Msg = "404: the registry does not have this blob"
		}
	case status == 429 || status >= 500:
		e.Class, e.Temporary = source.ErrUnreachable, true
		e.Msg = fmt.Sprintf("%d from the registry", status)
	default:
		e.Class = source.ErrProtocol
		e.Msg = fmt.Sprintf("unexpected %d from the registry", status)
	}
	for i, ce := range codes {
		if i == 3 {
			break
		}
		e.Msg += " (" + source.Clean(ce.Code)
		if m := source.Clean(ce.Message); m != "" {
			e.Msg += ": " + m
		}
		e.Msg += ")"
	}
	return e
}
