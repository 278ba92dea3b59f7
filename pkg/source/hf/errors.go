package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/modelcache/modelcache/pkg/source"
)

// statusError reads a non-success answer: the Hub names the case in
// X-Error-Code (RepoNotFound, GatedRepo, RevisionNotFound, EntryNotFound)
// and explains it in X-Error-Message or a JSON {"error": …} body.
func statusError(where, op string, resp *http.Response) error {
	code := source.Clean(resp.Header.Get("X-Error-Code"))
	msg := source.Clean(resp.Header.Get("X-Error-Message"))
	if msg == "" {
		var body struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		if json.Unmarshal(b, &body) == nil {
			msg = source.Clean(body.Error)
		}
	}
	e := &source.Error{Where: where, Op: op}
	switch st := resp.StatusCode; {
	case st == http.StatusUnauthorized:
		e.Class = source.ErrAccessDenied
		e.Msg = "401: not allowed without a token (or the token is wrong)"
		if code == "RepoNotFound" {
			e.Msg = "401: the repo does not exist, or it is private and needs a token"
		}
	case st == http.StatusForbidden:
		e.Class = source.ErrAccessDenied
		e.Msg = "403: the token may not read this repo"
		if code == "GatedRepo" {
			e.Msg = "403: a gated repo this token was not granted (ask for access on the repo's page)"
		}
	case st == http.StatusNotFound:
		e.Class = source.ErrNotFound
		e.Msg = "404: not found"
		switch code {
		case "RepoNotFound":
			e.Msg = "404: the repo does not exist (or this token may not see it)"
		case "RevisionNotFound":
			e.Msg = "404: no such revision (branch, tag or commit)"
		case "EntryNotFound":
			e.Msg = "404: no such file at this commit"
		}
	case st == http.StatusTooManyRequests || st >= 500:
		e.Class, e.Temporary = source.ErrUnreachable, true
		e.Msg = fmt.Sprintf("%d from the Hub", st)
	default:
		e.Class = source.ErrProtocol
		e.Msg = fmt.Sprintf("unexpected %d from the Hub", st)
	}
	if code != "" {
		e.Msg += " (" + code + ")"
	}
	if msg != "" {
		e.Msg += ": " + msg
	}
	return e
}

// errTruncated: a body ended before the bytes it announced.
var errTruncated = errors.New("the body ended early")
