package gcs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"golang.org/x/oauth2"

	"github.com/modelcache/modelcache/pkg/source"
)

// statusError reads a non-success answer: the JSON API explains it in
// {"error": {"code": 403, "message": "…", "errors": [{"reason": "forbidden"}]}}.
// gone says the request named a generation: its 404 means the object
// changed since it was listed.
func statusError(where, op string, resp *http.Response, gone bool) error {
	var body struct {
		Error struct {
			Message string `json:"message"`
			Errors  []struct {
				Reason string `json:"reason"`
			} `json:"errors"`
		} `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var msg, reason string
	if json.Unmarshal(b, &body) == nil {
		msg = source.Clean(body.Error.Message)
		if len(body.Error.Errors) > 0 {
			reason = source.Clean(body.Error.Errors[0].Reason)
		}
	}
	e := &source.Error{Where: where, Op: op}
	switch st := resp.StatusCode; {
	case st == http.StatusUnauthorized:
		e.Class = source.ErrAccessDenied
		e.Msg = "401: not allowed without credentials (or they are wrong or expired)"
	case st == http.StatusForbidden:
		e.Class = source.ErrAccessDenied
		e.Msg = "403: these credentials may not read it (storage.objects.list and storage.objects.get are needed)"
	case st == http.StatusNotFound && gone:
		e.Class = source.ErrChanged
		e.Msg = "404: the generation listed is gone (the object was overwritten or deleted since)"
	case st == http.StatusNotFound:
		e.Class = source.ErrNotFound
		e.Msg = "404: not found"
	case st == http.StatusPreconditionFailed:
		e.Class = source.ErrChanged
		e.Msg = "412: the object is not the generation listed"
	case st == http.StatusTooManyRequests || st == http.StatusRequestTimeout || st >= 500:
		e.Class, e.Temporary = source.ErrUnreachable, true
		e.Msg = fmt.Sprintf("%d from the server", st)
	case st >= 300 && st < 400:
		e.Class = source.ErrProtocol
		e.Msg = fmt.Sprintf("%d: a redirect (to %q), which is not followed", st, source.Clean(resp.Header.Get("Location")))
	default:
		e.Class = source.ErrProtocol
		e.Msg = fmt.Sprintf("unexpected %d from the server", st)
	}
	if reason != "" {
		e.Msg += " (" + reason + ")"
	}
	if msg != "" {
		e.Msg += ": " + msg
	}
	return e
}

// tokenError is a token that could not be had: refused by the token
// service (access denied, not retried), or the metadata server or token
// service not answering (worth another try). The cause's text is kept
// out: a token service's answer may echo what was sent to it.
func tokenError(ctx context.Context, where, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 && re.Response.StatusCode != http.StatusTooManyRequests {
		return &source.Error{Class: source.ErrAccessDenied, Where: where, Op: op,
			Msg: fmt.Sprintf("no access token: the token service answered %d", re.Response.StatusCode)}
	}
	return &source.Error{Class: source.ErrUnreachable, Temporary: true, Where: where, Op: op,
		Msg: "no access token: " + source.Clean(firstLine(err.Error()))}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
