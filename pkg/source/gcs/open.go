package gcs

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// Open reads bytes [off, end) of the object name in bucket at the
// generation f.ETag (as listed), with alt=media and a Range. The reader
// yields exactly end-off bytes, or fails with io.ErrUnexpectedEOF. A
// generation that is gone (the object was overwritten or deleted since it
// was listed), or an answer for another generation or size, is
// source.ErrChanged; an answer that makes no sense is source.ErrProtocol.
func (c *Client) Open(ctx context.Context, bucket, name string, f model.File, off, end int64) (io.ReadCloser, error) {
	w := "gs://" + bucket + "/" + name
	if err := ValidBucket(bucket); err != nil {
		return nil, err
	}
	gen, err := generation(f)
	if err != nil {
		return nil, fmt.Errorf("gcs: read %s: %w", w, err)
	}
	if off < 0 || end < off || end > f.Size {
		return nil, fmt.Errorf("gcs: read %s: range [%d, %d) of a %d-byte file", w, off, end, f.Size)
	}
	if off == end {
		return io.NopCloser(strings.NewReader("")), nil
	}
	u := c.objectURL(bucket, name, url.Values{"alt": {"media"}, "generation": {gen}})
	// identity: GCS would otherwise transcode an object stored gzipped,
	// ignoring the Range; the cache keeps objects byte for byte.
	h := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", off, end-1)}, "Accept-Encoding": {"identity"}}
	resp, err := c.do(ctx, u, w, "read", h)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		defer resp.Body.Close()
		return nil, statusError(w, "read", resp, true)
	}
	if err := checkRead(resp, f, gen, off, end); err != nil {
		resp.Body.Close()
		return nil, err.at(w)
	}
	return source.ExactReader(resp.Body, end-off), nil
}

// Stat asks for the metadata of the object name at the generation f.ETag:
// the permission it needs (storage.objects.get) is the one a read needs,
// so it answers whether these credentials may read the file.
func (c *Client) Stat(ctx context.Context, bucket, name string, f model.File) error {
	w := "gs://" + bucket + "/" + name
	if err := ValidBucket(bucket); err != nil {
		return err
	}
	gen, err := generation(f)
	if err != nil {
		return fmt.Errorf("gcs: stat %s: %w", w, err)
	}
	u := c.objectURL(bucket, name, url.Values{"generation": {gen}, "fields": {"name,size,generation,md5Hash,crc32c"}})
	resp, err := c.do(ctx, u, w, "stat", http.Header{"Accept": {"application/json"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(w, "stat", resp, true)
	}
	var o object
	if err := source.DecodeJSON(resp.Body, 1<<20, w, "stat", &o); err != nil {
		return err
	}
	if tag, err := etag(o); err != nil || o.Size.v != f.Size || tag != f.ETag {
		return &source.Error{Class: source.ErrChanged, Where: w, Op: "stat",
			Msg: fmt.Sprintf("generation %d of %d bytes, listed as %s of %d", o.Generation.v, o.Size.v, f.ETag, f.Size)}
	}
	return nil
}

// generation is f's listed generation, which every read names.
func generation(f model.File) (string, error) {
	gen, _, ok := parseETag(f.ETag)
	if !ok {
		return "", fmt.Errorf("%q is not a GCS version token (list the model first)", source.Trim(f.ETag))
	}
	return gen, nil
}

// hashesAgree checks the X-Goog-Hash header ("crc32c=BASE64,md5=BASE64",
// possibly in several headers) against the hash f was listed with.
func hashesAgree(h http.Header, f model.File) (string, bool) {
	_, want, _ := parseETag(f.ETag)
	algo, hexSum, _ := strings.Cut(want, ":")
	for _, v := range h.Values("X-Goog-Hash") {
		for part := range strings.SplitSeq(v, ",") {
			k, b64, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || k != algo {
				continue
			}
			b, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				return "unreadable " + k, false
			}
			if got := hex.EncodeToString(b); got != hexSum {
				return k + " " + got, false
			}
		}
	}
	return "", true
}

// readErr is what is wrong with an answer to a read, and its class.
type readErr struct {
	class error
	msg   string
}

func (e *readErr) at(w string) error {
	return &source.Error{Class: e.class, Where: w, Op: "read", Msg: e.msg}
}

// checkRead accepts a 206 for exactly [off, end) of an object of f.Size
// bytes, or a 200 when that range is the whole object, of the generation
// asked for (where the server names it) and stored as it is served.
func checkRead(resp *http.Response, f model.File, gen string, off, end int64) *readErr {
	changed := func(format string, a ...any) *readErr {
		return &readErr{class: source.ErrChanged, msg: fmt.Sprintf(format, a...)}
	}
	bad := func(format string, a ...any) *readErr {
		return &readErr{class: source.ErrProtocol, msg: fmt.Sprintf(format, a...)}
	}
	if g := resp.Header.Get("X-Goog-Generation"); g != "" && g != gen {
		return changed("asked for generation %s, got %s", gen, source.Clean(g))
	}
	if got, ok := hashesAgree(resp.Header, f); !ok {
		return changed("the object served has %s, listed with %s", source.Clean(got), f.ETag)
	}
	// GCS serves an object stored gzip-encoded decompressed (ignoring the
	// Range), and says so only in X-Goog-Stored-Content-Encoding: its
	// bytes would not be the ones listed.
	for _, h := range []string{"Content-Encoding", "X-Goog-Stored-Content-Encoding"} {
		if enc := resp.Header.Get(h); enc != "" && enc != "identity" {
			return bad("the object is stored or served with %s %q; models are cached byte for byte: store them without Content-Encoding", h, source.Clean(enc))
		}
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		from, to, total, ok := source.ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok {
			return bad("206 with Content-Range %q", source.Clean(resp.Header.Get("Content-Range")))
		}
		if total != f.Size {
			return changed("the object is %d bytes now, %d when listed", total, f.Size)
		}
		if from != off || to != end-1 {
			return bad("asked for bytes %d-%d, got %d-%d", off, end-1, from, to)
		}
		if resp.ContentLength >= 0 && resp.ContentLength != end-off {
			return bad("asked for %d bytes, the answer has %d", end-off, resp.ContentLength)
		}
	case http.StatusOK:
		if off != 0 || end != f.Size {
			return bad("asked for bytes %d-%d, got the whole object", off, end-1)
		}
		if resp.ContentLength >= 0 && resp.ContentLength != f.Size {
			return changed("the object is %d bytes now, %d when listed", resp.ContentLength, f.Size)
		}
	}
	return nil
}
