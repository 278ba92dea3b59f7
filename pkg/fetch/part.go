package fetch

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/cespare/xxhash/v2"

	"github.com/modelcache/modelcache/pkg/model"
)

// leafState follows the byte stream of one part across leaf boundaries and
// across retries: a retry continues at pos with the hash of the current leaf
// as it was, so every byte is fetched, written and hashed exactly once.
type leafState struct {
	pos     int64 // next byte to write
	leaf    int   // leaf that pos is in
	leafEnd int64
	h       *xxhash.Digest
}

// fetchPart downloads one part into its file's ingest, retrying transient
// failures from the last byte written; true if it was the file's last part
// (the file goes to the committers). Failures stop the run.
func (r *run) fetchPart(p *part, buf []byte) (last bool) {
	fl := p.file
	off, n := model.LeafRange(fl.meta.Size, p.leaf)
	st := &leafState{pos: p.off, leaf: p.leaf, leafEnd: off + n, h: xxhash.New()}
	var start int64
	get := func() error {
		start = st.pos
		return r.get(fl, st, p.end, buf)
	}
	if err := r.f.retry(r.ctx, r.o, fl.key, get, func() bool { return st.pos > start }, &r.retries); err != nil {
		if errors.Is(err, ErrChanged) || errors.Is(err, ErrNotFound) {
			fl.gone.Store(true) // even if another failure stopped the run first
		}
		r.fail(err)
		return false
	}
	// The part's bytes start for the disk now, while other parts download,
	// rather than all at once in the commit's fsync.
	if err := fl.ing.StartWriteback(p.off, p.end-p.off); err != nil {
		r.fail(fmt.Errorf("fetch %s: %w", r.o.where(fl.key), err))
		return false
	}
	return fl.left.Add(-1) == 0
}

// get is one attempt: read bytes [st.pos, end) from the origin.
func (r *run) get(fl *file, st *leafState, end int64, buf []byte) error {
	body, err := r.o.open(r.ctx, fl.key, fl.meta, st.pos, end)
	if err != nil {
		return err
	}
	defer body.Close()
	for st.pos < end {
		n, err := io.ReadFull(body, buf[:min(int64(len(buf)), end-st.pos)])
		if n > 0 {
			if werr := r.write(fl, st, buf[:n]); werr != nil {
				return &localError{werr}
			}
		}
		if err != nil {
			return err // a short body: retried from st.pos
		}
	}
	return nil
}

// write stores b at st.pos, hashes it into the current leaf and marks every
// leaf it completes.
func (r *run) write(fl *file, st *leafState, b []byte) error {
	if _, err := fl.ing.WriteAt(b, st.pos); err != nil {
		return err
	}
	n := int64(len(b))
	for len(b) > 0 {
		k := min(int64(len(b)), st.leafEnd-st.pos)
		if !fl.oneLeaf {
			// A one-leaf ingest keeps no journal: its leaf sum would go
			// nowhere (0.2 CPU-s of xxhash per 2 GB of small files).
			st.h.Write(b[:k])
		}
		st.pos += k
		b = b[k:]
		if st.pos == st.leafEnd {
			if err := fl.ing.MarkLeaf(st.leaf, st.h.Sum64()); err != nil {
				return err
			}
			st.h.Reset()
			st.leaf++
			if st.pos < fl.meta.Size {
				off, l := model.LeafRange(fl.meta.Size, st.leaf)
				st.leafEnd = off + l
			}
		}
	}
	r.fetched.Add(n)
	r.progress(n, true)
	return nil
}

// checkResponse refuses bytes that are not the ones asked for: a server that
// ignores Range (or If-Match) would otherwise put the wrong bytes at an
// offset, or another version's bytes into the file.
func checkResponse(out *s3.GetObjectOutput, pos, end int64, f model.File) error {
	if got := strings.Trim(aws.ToString(out.ETag), `"`); got != "" && f.ETag != "" && got != f.ETag {
		return &changedError{fmt.Sprintf("object changed since it was listed (ETag %q, listed %q)", got, f.ETag)}
	}
	cr := aws.ToString(out.ContentRange)
	if cr == "" {
		if pos == 0 && end == f.Size {
			return nil // whole object asked for; a 200 answer is fine
		}
		return &protocolError{fmt.Sprintf("server ignored the Range header for bytes %d-%d", pos, end-1)}
	}
	// "bytes START-END/TOTAL"
	spec, total, ok := strings.Cut(strings.TrimPrefix(cr, "bytes "), "/")
	first, _, ok2 := strings.Cut(spec, "-")
	s, err1 := strconv.ParseInt(first, 10, 64)
	if !ok || !ok2 || err1 != nil || s != pos {
		return &protocolError{fmt.Sprintf("server answered range %q for bytes %d-%d", cr, pos, end-1)}
	}
	if t, err := strconv.ParseInt(total, 10, 64); err == nil && t != f.Size {
		return &changedError{fmt.Sprintf("object is %d bytes, listed as %d", t, f.Size)}
	}
	return nil
}

// changedError: the object is not the one listed. Not retried.
type changedError struct{ msg string }

func (e *changedError) Error() string { return e.msg }

// protocolError: the server's answer cannot be used. Not retried.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return e.msg }
