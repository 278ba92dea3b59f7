package hf

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// maxPageBytes bounds one page of the tree API: the Hub sends at most
// 1,000 entries of a few hundred bytes.
const maxPageBytes = 32 << 20

type treeEntry struct {
	Type string `json:"type"`
	Path string `json:"path"`
	OID  string `json:"oid"`
	Size int64  `json:"size"`
	LFS  *struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs"`
}

// List returns every file of repo at commit, sorted as the Hub sends them.
// An LFS file's Digest is the SHA-256 the Hub publishes for it; ETag is the
// LFS SHA-256 or the git blob id, which change whenever the content does.
func (c *Client) List(ctx context.Context, repo, commit string) ([]model.File, error) {
	where := where(repo, commit)
	if err := ValidRepo(repo); err != nil {
		return nil, err
	}
	if !commitRE.MatchString(commit) {
		return nil, fmt.Errorf("hf: list %s: %q is not a commit (resolve the revision first)", where, commit)
	}
	base := "/api/models/" + repo + "/tree/" + commit
	next := c.url(base)
	next.RawQuery = "recursive=true&expand=false"
	var files []model.File
	seen := map[string]bool{}
	for page := 1; next != nil; page++ {
		if page > c.maxPages {
			return nil, source.LimitError(where, "list", fmt.Sprintf("more than %d pages of files (--max-list-pages)", c.maxPages))
		}
		entries, link, err := c.treePage(ctx, next, where)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			f, ok, err := fileOf(e)
			if err != nil {
				return nil, source.ProtocolError(where, "list", "%v", err)
			}
			if !ok {
				continue
			}
			if seen[f.Path] {
				return nil, source.ProtocolError(where, "list", "%q listed twice", f.Path)
			}
			seen[f.Path] = true
			if len(files) == c.maxFiles {
				return nil, source.LimitError(where, "list", fmt.Sprintf("more than %d files (--max-files)", c.maxFiles))
			}
			files = append(files, f)
		}
		if next, err = c.nextPage(next, link, base); err != nil {
			return nil, source.ProtocolError(where, "list", "%v", err)
		}
	}
	return files, nil
}

func (c *Client) treePage(ctx context.Context, u *url.URL, where string) ([]treeEntry, string, error) {
	resp, err := c.do(ctx, http.MethodGet, u, http.Header{"Accept": {"application/json"}})
	if err != nil {
		return nil, "", source.TransportError(ctx, where, "list", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", statusError(where, "list", resp)
	}
	var entries []treeEntry
	if err := source.DecodeJSON(resp.Body, maxPageBytes, where, "list", &entries); err != nil {
		return nil, "", err
	}
	return entries, resp.Header.Get("Link"), nil
}

// fileOf checks one entry: ok is false for folders.
func fileOf(e treeEntry) (model.File, bool, error) {
	switch e.Type {
	case "directory":
		return model.File{}, false, nil
	case "file":
	default:
		return model.File{}, false, fmt.Errorf("entry %q of type %q", source.Trim(e.Path), source.Trim(e.Type))
	}
	rel, skip, err := model.RelPath("", e.Path)
	if err != nil || skip {
		return model.File{}, false, fmt.Errorf("file path %q: not a relative path inside the model", source.Trim(e.Path))
	}
	if e.Size < 0 || e.Size > model.MaxFileSize {
		return model.File{}, false, fmt.Errorf("%q: a size of %d bytes", rel, e.Size)
	}
	f := model.File{Path: rel, Size: e.Size}
	if e.LFS != nil {
		if !sha256RE.MatchString(e.LFS.OID) {
			return model.File{}, false, fmt.Errorf("%q: LFS oid %q is not a SHA-256", rel, source.Trim(e.LFS.OID))
		}
		if e.LFS.Size != e.Size {
			return model.File{}, false, fmt.Errorf("%q: listed as %d bytes, its LFS object as %d", rel, e.Size, e.LFS.Size)
		}
		f.ETag = e.LFS.OID
		f.Digest = model.Digest(model.DigestAlgorithm + ":" + e.LFS.OID)
		return f, true, nil
	}
	if !gitOIDRE.MatchString(e.OID) {
		return model.File{}, false, fmt.Errorf("%q: git oid %q is not a blob id", rel, source.Trim(e.OID))
	}
	f.ETag = e.OID
	return f, true, nil
}

// nextPage follows a Link header's rel="next". A link that leaves the
// endpoint or the listing is refused: it would take the token elsewhere,
// or splice another repo's files into this one.
func (c *Client) nextPage(cur *url.URL, link, base string) (*url.URL, error) {
	for part := range strings.SplitSeq(link, ",") {
		target, params, ok := strings.Cut(part, ";")
		target = strings.TrimSpace(target)
		if !ok || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
			continue
		}
		if !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
			continue
		}
		u, err := cur.Parse(target[1 : len(target)-1])
		if err != nil {
			return nil, fmt.Errorf("next page link %q: %v", source.Trim(target), err)
		}
		if !c.sameOrigin(u) || u.EscapedPath() != base || u.User != nil {
			return nil, fmt.Errorf("next page link %q leaves %s%s", source.Trim(u.Redacted()), c.endpoint, base)
		}
		return u, nil
	}
	return nil, nil
}
