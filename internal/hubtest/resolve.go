package hubtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// resolve answers GET and HEAD of /{repo}/resolve/{rev}/{path}. A regular
// file is served here, with its quoted git blob sha1 as ETag. An LFS file
// is a 302 to the CDN, as on the Hub; the 302 carries what Python reads
// without following it (X-Linked-Etag: the quoted sha256, X-Linked-Size,
// X-Repo-Commit), and the CDN's answer what JS reads after following it
// (ETag, Content-Range). Both always carry X-Repo-Commit.
func (h *Hub) resolve(w http.ResponseWriter, r *http.Request, repo, rev, path string) {
	if !h.allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	v, ok := h.open(w, r, repo, rev)
	if !ok {
		return
	}
	w.Header().Set("X-Repo-Commit", v.c.sha)
	e := v.file(path)
	if e == nil || e.dir {
		h.fail(w, r, http.StatusNotFound, codeEntryNotFound, fmt.Sprintf("Entry not found: %s", path))
		return
	}
	if e.lfs {
		q := url.Values{"repo": {repo}, "path": {path}}
		q.Set("sig", cdnSignature(e.sha256, q))
		loc := fmt.Sprintf("%s/lfs/%s?%s", h.CDN, e.sha256, q.Encode())
		w.Header().Set("Location", loc)
		w.Header().Set("ETag", strconv.Quote(e.oid))
		w.Header().Set("X-Linked-Etag", strconv.Quote(e.sha256))
		w.Header().Set("X-Linked-Size", strconv.FormatInt(e.size, 10))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusFound)
		if r.Method != http.MethodHead {
			fmt.Fprintf(w, "Found. Redirecting to %s", loc)
		}
		return
	}
	data := e.data
	h.mu.Lock()
	if bad, ok := h.repos[repo].corrupt[path]; ok {
		data = bad
	}
	h.mu.Unlock()
	serveBytes(w, r, data, e.size, e.oid, func() {
		h.fail(w, r, http.StatusRequestedRangeNotSatisfiable, "", "Requested range not satisfiable")
	})
}

// cdnKey signs CDN URLs, as the Hub signs its CloudFront URLs, so a client
// that rebuilds the URL instead of following Location (or drops its query,
// as Python does for relative redirects) gets 403.
var cdnKey = []byte("hubtest cdn")

func cdnSignature(sha256hex string, q url.Values) string {
	m := hmac.New(sha256.New, cdnKey)
	fmt.Fprintf(m, "%s\x00%s\x00%s", sha256hex, q.Get("repo"), q.Get("path"))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// serveCDN answers GET and HEAD of /lfs/{sha256}?repo=&path=&sig=, the
// URLs resolve redirects to. It ignores Authorization (the URL is the
// credential) but records it, and never sends "X-Cache: ... cloudfront",
// which would make the JS client fetch the CDN URL directly, with its
// token.
func (h *Hub) serveCDN(w http.ResponseWriter, r *http.Request) {
	h.record("cdn", r)
	fail := func(status int, msg string) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			fmt.Fprintln(w, msg)
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		fail(http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	sum, ok := strings.CutPrefix(r.URL.EscapedPath(), "/lfs/")
	q := r.URL.Query()
	if !ok || !hmac.Equal([]byte(q.Get("sig")), []byte(cdnSignature(sum, q))) {
		fail(http.StatusForbidden, "Access denied: not a URL the hub signed")
		return
	}
	h.mu.Lock()
	var data []byte
	var found, corrupt bool
	var served []byte
	if rp := h.repos[q.Get("repo")]; rp != nil {
		data, found = rp.blobs[sum]
		served, corrupt = rp.corrupt[q.Get("path")]
	}
	h.mu.Unlock()
	if !found {
		fail(http.StatusNotFound, "Not Found")
		return
	}
	size := int64(len(data))
	if !corrupt {
		served = data
	}
	serveBytes(w, r, served, size, sum, func() { fail(http.StatusRequestedRangeNotSatisfiable, "Requested Range Not Satisfiable") })
}

// serveBytes answers GET or HEAD with data, announcing size as the total
// (Content-Range) and the quoted etag: both describe the file, data is what
// is served (they differ only for a Corrupt file). It honours one range of
// "bytes=A-B", "bytes=A-" or "bytes=-N" with 206; anything else it does not
// understand, several ranges included, gets the whole body, which RFC 9110
// allows. A range that starts past the end gets 416 from unsatisfiable, with
// "Content-Range: bytes */size".
//
// An empty file has no byte to range over, so a Range request would be 416,
// and the JS client takes its size only from Content-Range (it probes with
// "bytes=0-0") and fails on 416: it gets 200 with "Content-Range: bytes */0"
// instead, which JS reads as size 0.
func serveBytes(w http.ResponseWriter, r *http.Request, data []byte, size int64, etag string, unsatisfiable func()) {
	hd := w.Header()
	hd.Set("ETag", strconv.Quote(etag))
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("Content-Type", "application/octet-stream")
	rng := r.Header.Get("Range")
	n := int64(len(data))
	if rng != "" && n == 0 {
		hd.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		hd.Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return
	}
	start, end, ok := parseRange(rng, n)
	switch {
	case !ok:
		hd.Set("Content-Length", strconv.FormatInt(n, 10))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(data)
		}
	case start >= n:
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		unsatisfiable()
	default:
		hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
		hd.Set("Content-Length", strconv.FormatInt(end-start+1, 10))
		w.WriteHeader(http.StatusPartialContent)
		if r.Method != http.MethodHead {
			w.Write(data[start : end+1])
		}
	}
}

// parseRange reads a single byte range of an n-byte body into inclusive
// offsets, clamping the end to the body; ok is false for no range or one
// not understood. start >= n means the range is not satisfiable.
func parseRange(s string, n int64) (start, end int64, ok bool) {
	spec, found := strings.CutPrefix(s, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	num := func(s string) (int64, bool) {
		if s == "" || strings.ContainsAny(s, "+-") {
			return 0, false
		}
		v, err := strconv.ParseInt(s, 10, 64)
		return v, err == nil
	}
	if a == "" { // the last b bytes
		last, ok := num(b)
		if !ok {
			return 0, 0, false
		}
		if last == 0 {
			return n, n, true // nothing to serve: unsatisfiable
		}
		return max(n-last, 0), n - 1, true
	}
	start, ok = num(a)
	if !ok {
		return 0, 0, false
	}
	end = n - 1
	if b != "" {
		if end, ok = num(b); !ok || end < start {
			return 0, 0, false
		}
	}
	return start, min(end, n-1), true
}
