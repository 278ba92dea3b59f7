package gcs

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// maxPageBytes bounds one page of objects.list: GCS sends at most 1,000
// objects, a few hundred bytes each with the fields asked for.
const maxPageBytes = 32 << 20

// maxPageToken bounds a nextPageToken, which goes back into a URL.
const maxPageToken = 4 << 10

// maxPageSize is how many objects a page asks for (GCS's maximum).
const maxPageSize = 1000

// listPage is one page of objects.list.
type listPage struct {
	Items         []object `json:"items"`
	NextPageToken string   `json:"nextPageToken"`
}

// object is an objects.list item: the JSON API writes int64s as strings
// ("size": "12"); a number is taken too.
type object struct {
	Name       string  `json:"name"`
	Size       flexInt `json:"size"`
	Generation flexInt `json:"generation"`
	MD5        string  `json:"md5Hash"` // base64; composite objects have none
	CRC32C     string  `json:"crc32c"`  // base64, big-endian
}

// flexInt is a JSON integer written as a number or a string; set says it
// was there at all.
type flexInt struct {
	v   int64
	set bool
}

var intRE = regexp.MustCompile(`^(0|[1-9][0-9]{0,18})$`)

func (n *flexInt) UnmarshalJSON(b []byte) error {
	b = bytes.Trim(b, `"`)
	if !intRE.Match(b) {
		return fmt.Errorf("%q is not a non-negative integer", source.Trim(string(b)))
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not a 64-bit integer", source.Trim(string(b)))
	}
	n.v, n.set = v, true
	return nil
}

// List returns every object under prefix/ in bucket as a file at its path
// relative to the prefix, sorted by name as GCS lists them, with ETag the
// object's generation and content hash (see etag). Folder
// placeholders ("dir/") are skipped. A name that would leave the model
// directory fails the listing: a model with a hostile file is refused, not
// partly fetched. Nothing under the prefix is source.ErrNotFound.
func (c *Client) List(ctx context.Context, bucket, prefix string) ([]model.File, error) {
	w := where(bucket, prefix)
	if err := ValidBucket(bucket); err != nil {
		return nil, err
	}
	p := prefix
	if p != "" {
		p += "/"
	}
	var files []model.File
	seen := map[string]bool{}
	token := ""
	for page := 1; ; page++ {
		if page > c.maxPages {
			return nil, source.LimitError(w, "list", fmt.Sprintf("more than %d pages of objects (--max-list-pages)", c.maxPages))
		}
		q := url.Values{"prefix": {p}, "maxResults": {strconv.Itoa(c.pageSize)}, "projection": {"noAcl"},
			"fields": {"items(name,size,generation,md5Hash,crc32c),nextPageToken"}}
		if token != "" {
			q.Set("pageToken", token)
		}
		pg, err := c.listPage(ctx, c.objectURL(bucket, "", q), w)
		if err != nil {
			return nil, err
		}
		for _, o := range pg.Items {
			f, ok, err := fileOf(prefix, o)
			if err != nil {
				return nil, source.ProtocolError(w, "list", "%v", err)
			}
			if !ok {
				continue
			}
			if seen[f.Path] {
				return nil, source.ProtocolError(w, "list", "%q listed twice", f.Path)
			}
			seen[f.Path] = true
			if len(files) == c.maxFiles {
				return nil, source.LimitError(w, "list", fmt.Sprintf("more than %d files (--max-files)", c.maxFiles))
			}
			files = append(files, f)
		}
		if pg.NextPageToken == "" {
			break
		}
		if len(pg.NextPageToken) > maxPageToken || pg.NextPageToken == token {
			return nil, source.ProtocolError(w, "list", "page %d: a nextPageToken of %d bytes that leads nowhere new", page, len(pg.NextPageToken))
		}
		token = pg.NextPageToken
	}
	if len(files) == 0 {
		return nil, &source.Error{Class: source.ErrNotFound, Where: w, Op: "list",
			Msg: "no objects under the prefix (or the bucket holds none)"}
	}
	return files, nil
}

func (c *Client) listPage(ctx context.Context, u, w string) (*listPage, error) {
	resp, err := c.do(ctx, u, w, "list", http.Header{"Accept": {"application/json"}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(w, "list", resp, false)
	}
	var pg listPage
	if err := source.DecodeJSON(resp.Body, maxPageBytes, w, "list", &pg); err != nil {
		return nil, err
	}
	return &pg, nil
}

// fileOf checks one listed object: ok is false for a folder placeholder.
func fileOf(prefix string, o object) (model.File, bool, error) {
	rel, skip, err := model.RelPath(prefix, o.Name)
	if err != nil {
		return model.File{}, false, fmt.Errorf("object %q: not a relative path inside the model", source.Trim(o.Name))
	}
	if skip {
		return model.File{}, false, nil
	}
	if !o.Size.set || o.Size.v > model.MaxFileSize {
		return model.File{}, false, fmt.Errorf("%q: a size of %d bytes", rel, o.Size.v)
	}
	if !o.Generation.set || o.Generation.v == 0 {
		return model.File{}, false, fmt.Errorf("%q: no generation", rel)
	}
	tag, err := etag(o)
	if err != nil {
		return model.File{}, false, fmt.Errorf("%q: %v", rel, err)
	}
	return model.File{Path: rel, Size: o.Size.v, ETag: tag}, true, nil
}

// etag is a listed object's version token: "GENERATION/md5:HEX", or
// "GENERATION/crc32c:HEX" for a composite object, which has no MD5. The
// generation pins every read to what was listed; the hash makes the token
// name the content too, because the cache reuses bytes by (token, size)
// within a bucket, and a generation is a timestamp that two objects may
// share.
func etag(o object) (string, error) {
	gen := strconv.FormatInt(o.Generation.v, 10)
	if o.MD5 != "" {
		b, err := base64.StdEncoding.DecodeString(o.MD5)
		if err != nil || len(b) != md5.Size {
			return "", fmt.Errorf("md5Hash %q is not a base64 MD5", source.Trim(o.MD5))
		}
		return gen + "/md5:" + hex.EncodeToString(b), nil
	}
	b, err := base64.StdEncoding.DecodeString(o.CRC32C)
	if err != nil || len(b) != 4 {
		return "", fmt.Errorf("neither md5Hash nor crc32c (%q) names its content", source.Trim(o.CRC32C))
	}
	return gen + "/crc32c:" + hex.EncodeToString(b), nil
}

// parseETag splits a token etag made into the generation and the hash
// ("md5:HEX" or "crc32c:HEX").
func parseETag(tag string) (gen, hash string, ok bool) {
	gen, hash, _ = strings.Cut(tag, "/")
	algo, h, _ := strings.Cut(hash, ":")
	if !intRE.MatchString(gen) || gen == "0" || !((algo == "md5" && len(h) == 32) || (algo == "crc32c" && len(h) == 8)) ||
		strings.Trim(h, "0123456789abcdef") != "" {
		return "", "", false
	}
	return gen, hash, true
}

// ObjectName is the name of the model file at path under prefix.
func ObjectName(prefix, path string) string {
	if prefix == "" {
		return path
	}
	return prefix + "/" + path
}
