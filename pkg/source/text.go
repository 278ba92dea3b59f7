package source

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"unicode"
)

// Helpers every scheme's client uses to word what a server said: values
// from the server are written by whoever runs it, so they are kept short
// and printable, and credentials in a URL are never shown.

// Trim keeps a value from the server short in messages.
func Trim(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Clean keeps what a server says printable and short in messages and logs.
func Clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	return Trim(strings.TrimSpace(s))
}

// Redact hides the user info of a URL (an endpoint someone wrote with a
// password in it).
func Redact(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = url.User("REDACTED")
		return u.String()
	}
	return s
}

// ProtocolError is an answer that makes no sense (ErrProtocol).
func ProtocolError(where, op, format string, a ...any) error {
	return &Error{Class: ErrProtocol, Where: where, Op: op, Msg: fmt.Sprintf(format, a...)}
}

// LimitError is an answer past a limit (ErrLimit).
func LimitError(where, op, msg string) error {
	return &Error{Class: ErrLimit, Where: where, Op: op, Msg: msg}
}

// TransportError is a request that got no answer: the caller's context
// ended (returned as is), or the network failed (worth another try).
func TransportError(ctx context.Context, where, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return &Error{Class: ErrUnreachable, Temporary: true, Where: where, Op: op, Msg: "no answer", Err: err}
}

// DecodeJSON decodes at most limit bytes of JSON from r into v.
func DecodeJSON(r io.Reader, limit int64, where, op string, v any) error {
	lr := &io.LimitedReader{R: r, N: limit + 1}
	if err := json.NewDecoder(lr).Decode(v); err != nil {
		if lr.N <= 0 {
			return LimitError(where, op, fmt.Sprintf("an answer of more than %d bytes", limit))
		}
		return ProtocolError(where, op, "the answer is not the JSON expected: %v", err)
	}
	return nil
}
