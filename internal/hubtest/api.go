package hubtest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The JSON shapes below are the fields the official clients read (see the
// protocol notes in docs of @huggingface/hub and huggingface_hub): Python
// needs "id" and "sha" of a model, "oid" on every tree entry and "size" on
// files; the key of an LFS sha256 is "sha256" in siblings but "oid" in tree
// and paths-info entries, as on the Hub.

type modelInfo struct {
	MongoID      string    `json:"_id"`
	ID           string    `json:"id"`
	ModelID      string    `json:"modelId"`
	Author       string    `json:"author"`
	SHA          string    `json:"sha"`
	LastModified string    `json:"lastModified"`
	CreatedAt    string    `json:"createdAt"`
	Private      bool      `json:"private"`
	Gated        any       `json:"gated"` // false or "manual"
	Disabled     bool      `json:"disabled"`
	Downloads    int       `json:"downloads"`
	Likes        int       `json:"likes"`
	Tags         []string  `json:"tags"`
	Siblings     []sibling `json:"siblings"`
}

type sibling struct {
	RFilename string      `json:"rfilename"`
	Size      *int64      `json:"size,omitempty"`
	BlobID    string      `json:"blobId,omitempty"`
	LFS       *siblingLFS `json:"lfs,omitempty"`
}

type siblingLFS struct {
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	PointerSize int    `json:"pointerSize"`
}

type treeEntry struct {
	Type       string      `json:"type"` // "file" or "directory": JS throws on anything else
	Oid        string      `json:"oid"`
	Size       int64       `json:"size"`
	Path       string      `json:"path"`
	LFS        *treeLFS    `json:"lfs,omitempty"`
	LastCommit *lastCommit `json:"lastCommit,omitempty"`
}

type treeLFS struct {
	Oid         string `json:"oid"` // sha256 of the content
	Size        int64  `json:"size"`
	PointerSize int    `json:"pointerSize"`
}

type lastCommit struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	Date  string `json:"date"`
}

// hubTime is the Hub's date format (JavaScript's toISOString).
func hubTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// modelInfo answers GET /api/models/{repo}[/revision/{rev}]. The expand=
// keys the JS client sends are ignored: every field is always there.
func (h *Hub) modelInfo(w http.ResponseWriter, r *http.Request, repo, rev string) {
	v, ok := h.open(w, r, repo, rev)
	if !ok {
		return
	}
	blobs, err := queryBool(r.URL.Query(), "blobs")
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "", err.Error())
		return
	}
	access := v.access
	id := sha256.Sum256([]byte(repo))
	info := modelInfo{MongoID: hex.EncodeToString(id[:12]), ID: repo, ModelID: repo,
		Author: repo[:strings.IndexByte(repo, '/')], SHA: v.c.sha,
		LastModified: hubTime(v.c.date), CreatedAt: hubTime(commitEpoch),
		Private: access == Private, Gated: false, Tags: []string{}, Siblings: []sibling{}}
	if access == Gated {
		info.Gated = "manual"
	}
	for _, e := range v.c.sorted {
		if e.dir {
			continue
		}
		s := sibling{RFilename: e.path}
		if blobs {
			s.Size, s.BlobID = &e.size, e.oid
			if e.lfs {
				s.LFS = &siblingLFS{SHA256: e.sha256, Size: e.size, PointerSize: e.pointerSize}
			}
		}
		info.Siblings = append(info.Siblings, s)
	}
	writeJSON(w, r, http.StatusOK, info)
}

// queryBool reads a boolean parameter as both clients send it ("true",
// "false", Python's "True", the Hub's own "1"); absent is false.
func queryBool(q url.Values, key string) (bool, error) {
	s := q.Get(key)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("invalid %s=%q", key, s)
	}
	return b, nil
}

func (v view) treeEntry(e *entry, expand bool) treeEntry {
	t := treeEntry{Type: "file", Oid: e.oid, Size: e.size, Path: e.path}
	if e.dir {
		t.Type = "directory"
	}
	if e.lfs {
		t.LFS = &treeLFS{Oid: e.sha256, Size: e.size, PointerSize: e.pointerSize}
	}
	if expand {
		t.LastCommit = v.lastCommit(e)
	}
	return t
}

// lastCommit is the oldest commit, going back from v's, since which path has
// had its current object id.
func (v view) lastCommit(e *entry) *lastCommit {
	c := v.c
	for {
		p := v.commits[c.parent]
		if p == nil {
			break
		}
		if pe := p.entries[e.path]; pe == nil || pe.oid != e.oid || pe.dir != e.dir {
			break
		}
		c = p
	}
	return &lastCommit{ID: c.sha, Title: c.title, Date: hubTime(c.date)}
}

// tree answers GET /api/models/{repo}/tree/{rev}[/{path}]: the entries
// under path (all of them when recursive, directories included, else its
// children), sorted by path, so a directory comes before its contents. A
// page ends with Link: <absolute URL>; rel="next" while more remain: the JS
// client follows nothing else (a relative URL, or no space after ";",
// silently ends its listing).
func (h *Hub) tree(w http.ResponseWriter, r *http.Request, repo, rev, dir string) {
	v, ok := h.open(w, r, repo, rev)
	if !ok {
		return
	}
	q := r.URL.Query()
	recursive, err1 := queryBool(q, "recursive")
	expand, err2 := queryBool(q, "expand")
	offset, err3 := decodeCursor(q.Get("cursor"))
	h.mu.Lock()
	size := h.pageSize
	h.mu.Unlock()
	var err4 error
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			err4 = fmt.Errorf("invalid limit=%q", s)
		}
		size = min(size, n)
	}
	for _, err := range []error{err1, err2, err3, err4} {
		if err != nil {
			h.fail(w, r, http.StatusBadRequest, "", err.Error())
			return
		}
	}
	dir = strings.TrimSuffix(dir, "/")
	if dir != "" {
		if e := v.c.entries[dir]; e == nil || !e.dir {
			w.Header().Set("X-Repo-Commit", v.c.sha)
			h.fail(w, r, http.StatusNotFound, codeEntryNotFound, fmt.Sprintf("%s does not exist on %q", dir, rev))
			return
		}
	}
	var all []*entry
	for _, e := range v.c.sorted {
		in := parentDir(e.path) == dir
		if recursive {
			in = dir == "" || strings.HasPrefix(e.path, dir+"/")
		}
		if in {
			all = append(all, e)
		}
	}
	page := []treeEntry{}
	for i := offset; i < offset+int64(size); i++ {
		switch {
		case i < int64(len(all)):
			page = append(page, v.treeEntry(all[i], expand))
		case v.endless:
			name := fmt.Sprintf("endless-%d", i-int64(len(all)))
			if dir != "" {
				name = dir + "/" + name
			}
			page = append(page, v.treeEntry(fileEntry(name, File{}), false))
		}
	}
	if v.endless || offset+int64(size) < int64(len(all)) {
		q.Set("cursor", encodeCursor(offset+int64(size)))
		w.Header().Set("Link", fmt.Sprintf("<%s%s?%s>; rel=\"next\"", h.URL, r.URL.EscapedPath(), q.Encode()))
	}
	writeJSON(w, r, http.StatusOK, page)
}

// The cursor is opaque to clients, as the Hub's is; here it hides an offset.
const cursorPrefix = "hubtest:"

func encodeCursor(offset int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(offset, 10)))
}

func decodeCursor(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		if n, ok := strings.CutPrefix(string(raw), cursorPrefix); ok {
			if off, err := strconv.ParseInt(n, 10, 64); err == nil && off >= 0 && off < 1<<40 {
				return off, nil
			}
		}
	}
	return 0, fmt.Errorf("invalid cursor %q", s)
}

// maxPathsInfoBody bounds what paths-info reads of a request body.
const maxPathsInfoBody = 1 << 20

// pathsInfo answers POST /api/models/{repo}/paths-info/{rev}, whose body is
// JSON {"paths": [...], "expand": bool} (JS) or a form with repeated paths=
// (Python): one entry per distinct path that exists, in the order asked;
// paths that do not exist are left out, as on the Hub. The JS client
// downloads a file only when exactly one entry comes back.
func (h *Hub) pathsInfo(w http.ResponseWriter, r *http.Request, repo, rev string) {
	v, ok := h.open(w, r, repo, rev)
	if !ok {
		return
	}
	paths, expand, err := readPathsInfo(r)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "", err.Error())
		return
	}
	out := []treeEntry{}
	done := map[string]bool{}
	for _, p := range paths {
		if done[p] {
			continue
		}
		done[p] = true
		if e := v.file(p); e != nil {
			out = append(out, v.treeEntry(e, expand))
		}
	}
	writeJSON(w, r, http.StatusOK, out)
}

func readPathsInfo(r *http.Request) (paths []string, expand bool, err error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPathsInfoBody+1))
	if err != nil {
		return nil, false, fmt.Errorf("reading the body: %w", err)
	}
	if len(body) > maxPathsInfoBody {
		return nil, false, fmt.Errorf("body over %d bytes", maxPathsInfoBody)
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/x-www-form-urlencoded" {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, false, fmt.Errorf("invalid form: %w", err)
		}
		expand, err := queryBool(form, "expand")
		return form["paths"], expand, err
	}
	var req struct {
		Paths  []string `json:"paths"`
		Expand bool     `json:"expand"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, false, fmt.Errorf("invalid JSON body: %w", err)
	}
	return req.Paths, req.Expand, nil
}
