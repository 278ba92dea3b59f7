// Package source is what a model is read from, whatever the scheme: a
// listing of its files (path, size, a version token, and the source's own
// SHA-256 where it publishes one) and ranged reads of their bytes. The
// fetcher's parallel parts, resume, hashing while streaming, dedup,
// capacity and progress are shared by every source; a scheme only lists and
// reads. It is a leaf beside pkg/model: standard library and model only.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/modelcache/modelcache/pkg/model"
)

// Source is one model at one place (a Hub repo at a revision, an S3 prefix).
type Source interface {
	// List names every file of the model. Each model.File has Path, Size
	// and ETag (a token that changes whenever the content does); Digest is
	// set when the source publishes the file's SHA-256, and the download
	// must then match it.
	List(ctx context.Context) (Listing, error)
	// Open reads bytes [off, end) of f as listed. The reader yields exactly
	// end-off bytes or fails; a source whose file no longer is what was
	// listed fails with ErrChanged.
	Open(ctx context.Context, f model.File, off, end int64) (io.ReadCloser, error)
}

// Listing is a model's files at one moment.
type Listing struct {
	// Revision is the source's own immutable name for what was listed (a
	// Hub commit), "" for a source without one (S3). Open reads that
	// revision, never a newer one.
	Revision string
	Files    []model.File
}

// Error classes: every error a source returns for a failure of the remote
// side is an *Error whose chain holds one of these (errors.Is), so callers
// map it to an API status without parsing messages.
var (
	// ErrNotFound: the repo, revision or file does not exist (or is hidden
	// from these credentials, as the Hub does for private repos).
	ErrNotFound = errors.New("source: not found")
	// ErrAccessDenied: credentials are missing, wrong or lack permission
	// (a gated repo the token was not granted).
	ErrAccessDenied = errors.New("source: access denied")
	// ErrUnreachable: the endpoint cannot be reached or keeps failing.
	ErrUnreachable = errors.New("source: unreachable")
	// ErrChanged: a file is not what was listed.
	ErrChanged = errors.New("source: changed since listed")
	// ErrLimit: a listing passed a limit (files, pages, bytes).
	ErrLimit = errors.New("source: over a limit")
	// ErrProtocol: the server's answer makes no sense (bad JSON, a wrong
	// range, a path that would leave the model directory). Not retried.
	ErrProtocol = errors.New("source: invalid answer from the server")
)

// Error is a failed operation, worded for the engineer who fixes it:
//
//	hf://org/model@main: list: gated repo: 401 GatedRepo: Access to model org/model is restricted
type Error struct {
	Class error  // one of the Err* classes; nil if unclassified
	Where string // the model (and file) the operation was about
	Op    string // "resolve", "list", "read"
	Msg   string
	// Temporary says a later attempt may succeed (throttling, 5xx, a
	// broken connection).
	Temporary bool
	Err       error // the cause, may be nil
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s: %s: %s", e.Where, e.Op, e.Msg)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap exposes both the class and the cause.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Class != nil {
		errs = append(errs, e.Class)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Temporary says whether err is worth trying again.
func Temporary(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Temporary
}
