package source

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ParseContentRange reads a Content-Range header, "bytes FROM-TO/TOTAL";
// total is -1 for "*". ok is false for anything else, or a range that is
// not inside its total.
func ParseContentRange(s string) (from, to, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	a, b, found2 := strings.Cut(rng, "-")
	if !found || !found2 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	from, err1 = strconv.ParseInt(a, 10, 64)
	to, err2 = strconv.ParseInt(b, 10, 64)
	total = -1
	if tot != "*" {
		total, err3 = strconv.ParseInt(tot, 10, 64)
	}
	if err1 != nil || err2 != nil || err3 != nil || from < 0 || to < from || (total >= 0 && total <= to) {
		return 0, 0, 0, false
	}
	return from, to, total, true
}

// ExactReader yields exactly n bytes of r: fewer is io.ErrUnexpectedEOF,
// more are never read. Sources wrap response bodies in it, so a body cut
// short is never taken for the end of a part.
func ExactReader(r io.ReadCloser, n int64) io.ReadCloser { return &exactReader{r: r, left: n} }

type exactReader struct {
	r    io.ReadCloser
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = fmt.Errorf("%w: %d bytes missing", io.ErrUnexpectedEOF, e.left)
	}
	if e.left == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func (e *exactReader) Close() error { return e.r.Close() }
