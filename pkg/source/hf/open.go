package hf

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// Open reads bytes [off, end) of f, as listed in repo at commit, from
// /{repo}/resolve/{commit}/{path}, following the Hub's redirect to its CDN
// (without the token). The reader yields exactly end-off bytes, or fails
// with io.ErrUnexpectedEOF. An answer for another size, range or (where
// the final server names it) another SHA-256 than f's is source.ErrChanged
// or source.ErrProtocol: the caller asked for an immutable commit.
func (c *Client) Open(ctx context.Context, repo, commit string, f model.File, off, end int64) (io.ReadCloser, error) {
	where := where(repo, commit) + "/" + f.Path
	if err := ValidRepo(repo); err != nil {
		return nil, err
	}
	if !commitRE.MatchString(commit) {
		return nil, fmt.Errorf("hf: read %s: %q is not a commit", where, commit)
	}
	if _, _, err := model.RelPath("", f.Path); err != nil {
		return nil, fmt.Errorf("hf: read %s: %w", where, err)
	}
	if off < 0 || end < off || end > f.Size {
		return nil, fmt.Errorf("hf: read %s: range [%d, %d) of a %d-byte file", where, off, end, f.Size)
	}
	if off == end {
		return io.NopCloser(strings.NewReader("")), nil
	}
	u := c.url("/" + repo + "/resolve/" + commit + "/" + escapePath(f.Path))
	h := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", off, end-1)}, "Accept-Encoding": {"identity"}}
	resp, err := c.do(ctx, http.MethodGet, u, h)
	if err != nil {
		return nil, source.TransportError(ctx, where, "read", err)
	}
	if err := checkRead(resp, f, off, end); err != nil {
		resp.Body.Close()
		if se, ok := err.(statusErr); ok {
			return nil, statusError(where, "read", se.resp)
		}
		return nil, source.ProtocolError(where, "read", "%v", err)
	}
	r := source.ExactReader(resp.Body, end-off)
	if f.Digest == "" && off == 0 && end == f.Size && f.Size <= maxGitCheck && gitOIDRE.MatchString(f.ETag) {
		return checkGitBlob(r, f, where)
	}
	return r, nil
}

// maxGitCheck bounds the git files checked against their blob id: they are
// read whole into memory first, so no byte reaches the cache unchecked.
// (The Hub keeps files over 10 MB in LFS, which have a SHA-256.)
const maxGitCheck = 2 << 20

// checkGitBlob reads a small git file whole and checks it against its blob
// id, the only digest the Hub publishes for it: sha1("blob <size>\0" + bytes).
func checkGitBlob(r io.ReadCloser, f model.File, where string) (io.ReadCloser, error) {
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	if got := hex.EncodeToString(h.Sum(nil)); got != f.ETag {
		return nil, &source.Error{Class: source.ErrChanged, Where: where, Op: "read",
			Msg: fmt.Sprintf("the bytes served have git blob id %s, the listing said %s", got, f.ETag)}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// statusErr carries a non-success answer to statusError.
type statusErr struct{ resp *http.Response }

func (statusErr) Error() string { return "status" }

// checkRead accepts a 206 for exactly [off, end) of a file of f.Size
// bytes, or a 200 when that range is the whole file.
func checkRead(resp *http.Response, f model.File, off, end int64) error {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		from, to, total, ok := source.ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok {
			return fmt.Errorf("206 with Content-Range %q", source.Trim(resp.Header.Get("Content-Range")))
		}
		if total != f.Size {
			return fmt.Errorf("the file is %d bytes now, %d when listed", total, f.Size)
		}
		if from != off || to != end-1 {
			return fmt.Errorf("asked for bytes %d-%d, got %d-%d", off, end-1, from, to)
		}
	case http.StatusOK:
		if off != 0 || end != f.Size || (resp.ContentLength >= 0 && resp.ContentLength != f.Size) {
			return fmt.Errorf("asked for bytes %d-%d, got the whole file (%d bytes)", off, end-1, resp.ContentLength)
		}
	default:
		return statusErr{resp}
	}
	// After the redirect, the CDN names an LFS object by its SHA-256.
	if f.Digest != "" {
		if tag := strings.Trim(strings.TrimPrefix(resp.Header.Get("ETag"), "W/"), `"`); sha256RE.MatchString(tag) && tag != f.Digest.Hex() {
			return fmt.Errorf("the server serves SHA-256 %s, the listing said %s", tag, f.Digest.Hex())
		}
	}
	return nil
}

// escapePath escapes each segment of a file path for a URL.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
