package fetch

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/modelcache/modelcache/pkg/source"
)

// Error classes. Every error the fetcher returns for an S3 failure is an
// *Error whose chain holds one of these (errors.Is), so the agent can map it
// to an API status without parsing messages.
var (
	// They are pkg/source's classes, so an error of any source (an hf://
	// repo's) is classed the same way.

	// ErrNotFound: the bucket, the prefix or an object does not exist.
	ErrNotFound = source.ErrNotFound
	// ErrAccessDenied: credentials are missing, wrong, expired or lack permission.
	ErrAccessDenied = source.ErrAccessDenied
	// ErrUnreachable: the endpoint cannot be reached (DNS, refused, timeouts,
	// TLS) or keeps failing (5xx, broken connections) after every retry.
	ErrUnreachable = source.ErrUnreachable
	// ErrChanged: an object changed after it was listed (its ETag no longer
	// matches). List again and fetch the new revision.
	ErrChanged = source.ErrChanged
	// ErrUnknownSource: the ref names a source the fetcher was not given.
	ErrUnknownSource = errors.New("fetch: unknown source")
	// ErrLimit: a listing passed one of the fetcher's limits (files,
	// pages, time); the message names the flag that sets it.
	ErrLimit = source.ErrLimit
)

// Error is a failed S3 operation, worded for the engineer who has to fix it:
//
//	fetch s3://b/m: bucket "b" does not exist at http://127.0.0.1:7070
type Error struct {
	Class  error  // one of the Err* classes; nil if unclassified
	Bucket string // bucket and key (or prefix) the operation was about
	Key    string
	Msg    string // what went wrong, with where
	Err    error  // the underlying cause (SDK or network error); may be nil
}

func (e *Error) Error() string {
	s := fmt.Sprintf("fetch s3://%s/%s: %s", e.Bucket, e.Key, e.Msg)
	if e.Err != nil {
		s += ": " + causeText(e.Err)
	}
	return s
}

// Unwrap exposes both the class and the cause to errors.Is and errors.As.
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

// causeText shortens SDK errors ("operation error S3: GetObject, https
// response error StatusCode: 403, RequestID: …, api error AccessDenied: …")
// to their useful part.
func causeText(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		s := ae.ErrorCode()
		if m := ae.ErrorMessage(); m != "" {
			s += ": " + m
		}
		var re *awshttp.ResponseError
		if errors.As(err, &re) {
			s = fmt.Sprintf("HTTP %d %s", re.HTTPStatusCode(), s)
			if id := re.ServiceRequestID(); id != "" {
				s += " (request id " + id + ")"
			}
		}
		return s
	}
	var ce *credentialsError
	if errors.As(err, &ce) {
		return ce.err.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Error()
	}
	return err.Error()
}

// credentialsError marks a failure to obtain credentials (an empty default
// chain, an unreadable key file), which no retry fixes.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "get credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// kind is what the fetcher does with an error.
type kind struct {
	class error // Err* class, nil if unknown
	retry bool  // a later attempt may succeed
	what  string
}

// classify decides whether err is worth retrying and which class it is. The
// rule from the aws-sdk-go-v2 retryer and s5cmd: throttling, server errors
// and broken connections are retried; a denied, missing or changed object,
// an unknown host and a bad certificate are not, because repeating the same
// request cannot change the answer.
//
// classify is only asked while the caller's context is alive (retry checks
// it first), so a deadline in err is a timeout of the transport, not the
// caller's: net/http's response header timeout (a server that accepts the
// request and never answers) says errors.Is(err, context.DeadlineExceeded).
// It is retried like any other timeout below.
func classify(err error) kind {
	if errors.Is(err, context.Canceled) {
		return kind{nil, false, "cancelled"}
	}
	var ce *credentialsError
	if errors.As(err, &ce) {
		return kind{ErrAccessDenied, false, "no usable credentials"}
	}
	var che *changedError
	if errors.As(err, &che) {
		return kind{ErrChanged, false, che.msg}
	}
	var pe *protocolError
	if errors.As(err, &pe) {
		return kind{nil, false, "unusable answer from %s"}
	}
	var ae smithy.APIError
	code := ""
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	switch code {
	case "NoSuchBucket":
		return kind{ErrNotFound, false, "bucket does not exist"}
	case "NoSuchKey", "NotFound":
		return kind{ErrNotFound, false, "object does not exist"}
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
		"TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity", "NotSignedUp",
		"XAdminUserNotFound": // versitygw's (404) answer for an unknown access key
		return kind{ErrAccessDenied, false, "access denied"}
	case "PreconditionFailed":
		return kind{ErrChanged, false, "object changed since it was listed"}
	case "InvalidRange":
		return kind{ErrChanged, false, "object is shorter than when it was listed"}
	case "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
		"InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException":
		return kind{ErrUnreachable, true, "server busy or failing at %s"}
	case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
		return kind{nil, false, "wrong region or endpoint %s for this bucket"}
	}
	switch {
	case status == 401 || status == 403:
		return kind{ErrAccessDenied, false, "access denied"}
	case status == 404:
		return kind{ErrNotFound, false, "not found"}
	case status == 412:
		return kind{ErrChanged, false, "object changed since it was listed"}
	case status == 416:
		return kind{ErrChanged, false, "object is shorter than when it was listed"}
	case status == 429 || status >= 500:
		return kind{ErrUnreachable, true, "server busy or failing at %s"}
	case status != 0:
		return kind{nil, false, "request refused by %s"}
	}

	// No HTTP response: the network.
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return kind{ErrUnreachable, !dns.IsNotFound, "cannot resolve the host of %s"}
	}
	var x509err x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	if errors.As(err, &x509err) || errors.As(err, &hostErr) || errors.As(err, &invalid) {
		return kind{ErrUnreachable, false, "cannot verify the TLS certificate of %s"}
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		// Refused or unroutable: retried a few times (a restarting server,
		// a load balancer blip), which costs about a second and a half.
		return kind{ErrUnreachable, true, "cannot connect to %s"}
	}
	// net.Error, and the SDK's read timeout (which has Timeout but not
	// Temporary, so it is no net.Error).
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return kind{ErrUnreachable, true, "timed out talking to %s"}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ECONNREFUSED) {
		return kind{ErrUnreachable, true, "connection to %s keeps breaking"}
	}
	return kind{nil, false, "request to %s failed"}
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
