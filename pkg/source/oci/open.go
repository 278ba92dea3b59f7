package oci

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// Open reads bytes [off, end) of f, a layer of a manifest of repo as
// listed, with a ranged GET of its blob (following the registry's
// redirect to its storage, without the credentials). The reader yields
// exactly end-off bytes, or fails with io.ErrUnexpectedEOF. A registry
// that ignores the range (a 200 for part of a blob) or answers another
// range or size is source.ErrProtocol: never bytes from the wrong offset.
// The bytes are not hashed here; the caller checks f.Digest.
func (c *Client) Open(ctx context.Context, repo string, f model.File, off, end int64) (io.ReadCloser, error) {
	where := c.where(repo, "") + "/" + f.Path
	r, err := c.repository(repo)
	if err != nil {
		return nil, err
	}
	if !hexRE.MatchString(f.ETag) || (f.Digest != "" && string(f.Digest) != "sha256:"+f.ETag) {
		return nil, fmt.Errorf("oci: read %s: the file's ETag %q is not its sha256 digest %q as listed", where, source.Trim(f.ETag), source.Trim(string(f.Digest)))
	}
	if off < 0 || end < off || end > f.Size {
		return nil, fmt.Errorf("oci: read %s: range [%d, %d) of a %d-byte file", where, off, end, f.Size)
	}
	if off == end {
		return io.NopCloser(strings.NewReader("")), nil
	}
	ref := r.Reference
	ref.Reference = "sha256:" + f.ETag
	scheme := "https"
	if c.plain {
		scheme = "http"
	}
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, ref.Host(), ref.Repository, ref.Reference)
	req, err := http.NewRequestWithContext(auth.AppendRepositoryScope(ctx, ref, auth.ActionPull), http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end-1))
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := c.auth.Do(req)
	if err != nil {
		return nil, c.classify(ctx, where, "read", err)
	}
	if err := checkRead(resp, f, off, end); err != nil {
		defer resp.Body.Close()
		if st, ok := err.(statusErr); ok {
			return nil, c.statusError(where, "read", st.status, readCodes(resp))
		}
		return nil, source.ProtocolError(where, "read", "%v", err)
	}
	return source.ExactReader(resp.Body, end-off), nil
}

// statusErr carries a non-success status to statusError.
type statusErr struct{ status int }

func (statusErr) Error() string { return "status" }

// checkRead accepts a 206 for exactly [off, end) of a blob of f.Size
// bytes, or a 200 when that range is the whole blob.
func checkRead(resp *http.Response, f model.File, off, end int64) error {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		from, to, total, ok := source.ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok {
			return fmt.Errorf("206 with Content-Range %q", source.Trim(resp.Header.Get("Content-Range")))
		}
		if total >= 0 && total != f.Size {
			return fmt.Errorf("the blob is %d bytes, the manifest says %d", total, f.Size)
		}
		if from != off || to != end-1 {
			return fmt.Errorf("asked for bytes %d-%d, got %d-%d", off, end-1, from, to)
		}
	case http.StatusOK:
		if off != 0 || end != f.Size {
			return fmt.Errorf("asked for bytes %d-%d of %d, the registry ignored the range and sent the whole blob (ranged reads are needed)", off, end-1, f.Size)
		}
		if resp.ContentLength >= 0 && resp.ContentLength != f.Size {
			return fmt.Errorf("a blob of %d bytes, the manifest says %d", resp.ContentLength, f.Size)
		}
	default:
		return statusErr{resp.StatusCode}
	}
	if d := resp.Header.Get("Docker-Content-Digest"); d != "" && d != "sha256:"+f.ETag {
		return fmt.Errorf("the registry serves blob %s for %s", source.Trim(d), "sha256:"+f.ETag)
	}
	return nil
}

// readCodes reads the distribution spec's error codes from an error body.
func readCodes(resp *http.Response) errcode.Errors {
	var body struct {
		Errors errcode.Errors `json:"errors"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 8<<10)).Decode(&body)
	return body.Errors
}
