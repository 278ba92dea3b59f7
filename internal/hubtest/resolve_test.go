package hubtest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestResolveRegular(t *testing.T) {
	h, c1, c2, _ := sample(t)
	base := h.URL + "/org/m/resolve/"
	etag := strconv.Quote(fileEntry("", File{Data: []byte("hello again")}).oid)
	for _, c := range []struct {
		rng, body, contentRange string
		status                  int
	}{
		{"", "hello again", "", 200},
		{"bytes=0-0", "h", "bytes 0-0/11", 206},
		{"bytes=6-", "again", "bytes 6-10/11", 206},
		{"bytes=-5", "again", "bytes 6-10/11", 206},
		{"bytes=-50", "hello again", "bytes 0-10/11", 206},
		{"bytes=2-4", "llo", "bytes 2-4/11", 206},
		{"bytes=8-1000", "ain", "bytes 8-10/11", 206}, // the end is clamped
		{"bytes=11-", "", "bytes */11", 416},          // starts past the end
		{"bytes=11-20", "", "bytes */11", 416},
		{"bytes=-0", "", "bytes */11", 416},
		{"bytes=0-1,4-5", "hello again", "", 200}, // several ranges: the whole body
		{"bytes=5-2", "hello again", "", 200},     // not understood: ignored
		{"bytes=x-", "hello again", "", 200},
		{"items=0-1", "hello again", "", 200},
		{"bytes=-", "hello again", "", 200},
		{"bytes=99999999999999999999-", "hello again", "", 200},
	} {
		r := call(t, "GET", base+"main/a.txt", "", "Range", c.rng)
		r.wantStatus(t, c.status, "")
		if c.status != 416 && string(r.body) != c.body || r.Header.Get("Content-Range") != c.contentRange ||
			r.Header.Get("X-Repo-Commit") != c2 || r.Header.Get("ETag") != etag {
			t.Errorf("Range %q: %d %q Content-Range %q, headers %v", c.rng, r.StatusCode, r.body, r.Header.Get("Content-Range"), r.Header)
		}
	}
	if r := call(t, "GET", base+c1+"/sub%2Fb.txt", ""); string(r.body) != "bee" || r.Header.Get("X-Repo-Commit") != c1 {
		t.Errorf("by commit, escaped slash: %q %v", r.body, r.Header)
	}
	if r := call(t, "GET", base+"v1/a.txt?download=true", ""); string(r.body) != "hello" {
		t.Errorf("by tag: %q", r.body)
	}

	// HEAD: the headers of GET, no body.
	r := call(t, "HEAD", base+"main/a.txt", "")
	if r.StatusCode != 200 || len(r.body) != 0 || r.ContentLength != 11 || r.Header.Get("ETag") != etag || r.Header.Get("X-Repo-Commit") != c2 {
		t.Errorf("HEAD: %d %q %d %v", r.StatusCode, r.body, r.ContentLength, r.Header)
	}
	if r := call(t, "HEAD", base+"main/a.txt", "", "Range", "bytes=0-0"); r.StatusCode != 206 || r.Header.Get("Content-Range") != "bytes 0-0/11" {
		t.Errorf("HEAD with Range: %d %v", r.StatusCode, r.Header)
	}

	// An empty file: 200 with "Content-Range: bytes */0", the only answer
	// to the JS client's "bytes=0-0" probe it takes.
	for _, rng := range []string{"bytes=0-0", "bytes=0-", "bytes=-1"} {
		r := call(t, "GET", base+"main/empty", "", "Range", rng)
		if r.StatusCode != 200 || r.Header.Get("Content-Range") != "bytes */0" || r.ContentLength != 0 || r.Header.Get("ETag") != `"`+emptyBlobOid+`"` {
			t.Errorf("empty file, Range %s: %d %v", rng, r.StatusCode, r.Header)
		}
	}

	r = call(t, "GET", base+"main/nope", "")
	r.wantStatus(t, 404, "EntryNotFound")
	if r.Header.Get("X-Repo-Commit") != c2 {
		t.Errorf("missing file: X-Repo-Commit %q", r.Header.Get("X-Repo-Commit"))
	}
	call(t, "GET", base+"main/sub", "").wantStatus(t, 404, "EntryNotFound")
	call(t, "GET", base+"main/sub/", "").wantStatus(t, 404, "EntryNotFound")
	call(t, "GET", base+"main/sub/../a.txt", "").wantStatus(t, 404, "EntryNotFound") // not cleaned
	call(t, "GET", base+"nope/a.txt", "").wantStatus(t, 404, "RevisionNotFound")
}

func TestResolveLFS(t *testing.T) {
	h, _, c2, _ := sample(t)
	data := pseudoRandom(9, 1000)
	sum := sha256hex(data)
	r := call(t, "GET", h.URL+"/org/m/resolve/main/sub/deep/c.bin", "", "Authorization", "Bearer hf_x")
	r.wantStatus(t, 302, "")
	loc := r.Header.Get("Location")
	if !strings.HasPrefix(loc, h.CDN+"/") || r.Header.Get("X-Linked-Etag") != strconv.Quote(sum) ||
		r.Header.Get("X-Linked-Size") != "1000" || r.Header.Get("X-Repo-Commit") != c2 || r.Header.Get("ETag") == "" {
		t.Fatalf("302: %v", r.Header)
	}
	if h := call(t, "HEAD", h.URL+"/org/m/resolve/main/sub/deep/c.bin", ""); h.StatusCode != 302 || h.Header.Get("Location") != loc || len(h.body) != 0 {
		t.Errorf("HEAD: %d %v", h.StatusCode, h.Header)
	}

	for _, c := range []struct {
		method, rng string
		status      int
		body        []byte
	}{
		{"GET", "", 200, data},
		{"GET", "bytes=0-0", 206, data[:1]},
		{"GET", "bytes=990-", 206, data[990:]},
		{"GET", "bytes=1000-", 416, nil},
		{"HEAD", "", 200, nil},
	} {
		r := call(t, c.method, loc, "", "Range", c.rng)
		if r.StatusCode != c.status || c.status != 416 && !bytes.Equal(r.body, c.body) || r.Header.Get("ETag") != strconv.Quote(sum) ||
			r.Header.Get("X-Cache") != "" || c.status == 206 && !strings.HasSuffix(r.Header.Get("Content-Range"), "/1000") {
			t.Errorf("CDN %s Range %q: %d, %d bytes, %v", c.method, c.rng, r.StatusCode, len(r.body), r.Header)
		}
	}
	// The LFS empty file answers the probe as the resolve endpoint does.
	r = call(t, "GET", h.URL+"/org/m/resolve/main/lfs-empty", "")
	if e := call(t, "GET", r.Header.Get("Location"), "", "Range", "bytes=0-0"); e.StatusCode != 200 || e.Header.Get("Content-Range") != "bytes */0" {
		t.Errorf("empty LFS file on the CDN: %d %v", e.StatusCode, e.Header)
	}

	// The CDN serves only URLs the hub signed, Authorization or not.
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("path", "sub/b.txt")
	for _, bad := range []string{h.CDN + u.Path, h.CDN + u.Path + "?" + q.Encode(), h.CDN + "/lfs/" + sha256hex(nil) + "?" + u.RawQuery, h.CDN + "/"} {
		if r := call(t, "GET", bad, "", "Authorization", "Bearer hf_x"); r.StatusCode != 403 {
			t.Errorf("CDN %s: %d, want 403", bad, r.StatusCode)
		}
	}
	if r := call(t, "POST", loc, ""); r.StatusCode != 405 {
		t.Errorf("CDN POST: %d", r.StatusCode)
	}
}

func TestCorrupt(t *testing.T) {
	h, _, _, _ := sample(t)
	good := pseudoRandom(9, 1000)
	bad := slices.Clone(good)
	bad[500] ^= 1
	h.Corrupt("org/m", "sub/deep/c.bin", bad)
	h.Corrupt("org/m", "sub/b.txt", []byte("BEE"))
	var entries []treeEntry
	call(t, "POST", h.URL+"/api/models/org/m/paths-info/main", `{"paths":["sub/deep/c.bin","sub/b.txt"]}`).json(t, &entries)
	if entries[0].LFS.Oid != sha256hex(good) || entries[1].Oid != fileEntry("", File{Data: []byte("bee")}).oid {
		t.Errorf("paths-info no longer announces the original: %+v", entries)
	}
	r := call(t, "GET", h.URL+"/org/m/resolve/v1/sub/deep/c.bin", "")
	if r.Header.Get("X-Linked-Etag") != strconv.Quote(sha256hex(good)) || r.Header.Get("X-Linked-Size") != "1000" {
		t.Errorf("302 of a corrupt file: %v", r.Header)
	}
	cdn := call(t, "GET", r.Header.Get("Location"), "")
	if !bytes.Equal(cdn.body, bad) || cdn.Header.Get("ETag") != strconv.Quote(sha256hex(good)) {
		t.Errorf("CDN served the good bytes, or changed its ETag: %v", cdn.Header)
	}
	if p := call(t, "GET", r.Header.Get("Location"), "", "Range", "bytes=500-500"); !bytes.Equal(p.body, bad[500:501]) ||
		p.Header.Get("Content-Range") != "bytes 500-500/1000" {
		t.Errorf("CDN range of a corrupt file: %q %v", p.body, p.Header)
	}
	r = call(t, "GET", h.URL+"/org/m/resolve/main/sub/b.txt", "")
	if string(r.body) != "BEE" || r.Header.Get("ETag") != strconv.Quote(fileEntry("", File{Data: []byte("bee")}).oid) {
		t.Errorf("regular corrupt file: %q %v", r.body, r.Header)
	}
	// A corrupt file of another length: the Range total still announces the
	// listed size.
	h.Corrupt("org/m", "sub/b.txt", []byte("bumblebee"))
	if r := call(t, "GET", h.URL+"/org/m/resolve/main/sub/b.txt", "", "Range", "bytes=0-0"); r.Header.Get("Content-Range") != "bytes 0-0/3" {
		t.Errorf("Content-Range %q, want the announced total 3", r.Header.Get("Content-Range"))
	}
}

func TestEndlessPages(t *testing.T) {
	h, _, _, _ := sample(t)
	h.EndlessPages("org/m")
	pages := listAll(t, h.URL+"/api/models/org/m/tree/main?recursive=true", 50)
	all := paths(pages)
	if len(pages) != 50 || len(all) != 100 || all[0] != "a.txt" || all[7] != "endless-0" || all[99] != "endless-92" {
		t.Errorf("%d pages, %d entries: %q ... %q", len(pages), len(all), all[:8], all[len(all)-1])
	}
	if uniq := slices.Compact(slices.Sorted(slices.Values(all))); len(uniq) != len(all) {
		t.Error("an entry was listed twice")
	}
	if sub := paths(listAll(t, h.URL+"/api/models/org/m/tree/main/sub", 3)); len(sub) != 6 || sub[5] != "sub/endless-3" {
		t.Errorf("endless sub-listing: %q", sub)
	}
	// What was listed can be fetched.
	if r := call(t, "GET", h.URL+"/org/m/resolve/main/endless-92", ""); r.StatusCode != 200 || len(r.body) != 0 {
		t.Errorf("resolve endless-92: %d", r.StatusCode)
	}
	var got []treeEntry
	call(t, "POST", h.URL+"/api/models/org/m/paths-info/main", `{"paths":["sub/endless-3","endless-x"]}`).json(t, &got)
	if len(got) != 1 || got[0].Oid != emptyBlobOid {
		t.Errorf("paths-info of endless files: %+v", got)
	}
}

func TestPageSize(t *testing.T) {
	h, _, _, _ := sample(t)
	h.PageSize(0) // at least 1
	if n := len(listAll(t, h.URL+"/api/models/org/m/tree/main?recursive=true", 100)); n != 7 {
		t.Errorf("PageSize(0): %d pages, want 7", n)
	}
	h.PageSize(1000)
	if n := len(listAll(t, h.URL+"/api/models/org/m/tree/main?recursive=true", 100)); n != 1 {
		t.Errorf("PageSize(1000): %d pages, want 1", n)
	}
}

func TestRequests(t *testing.T) {
	h, _, _, _ := sample(t)
	r := call(t, "GET", h.URL+"/org/m/resolve/main/sub%2Fdeep/c.bin?x=1", "", "Authorization", "Bearer hf_a", "Range", "bytes=1-2", "Accept", "*/*")
	call(t, "GET", r.Header.Get("Location"), "", "Range", "bytes=1-2")
	got := h.Requests()
	loc, _ := url.Parse(r.Header.Get("Location"))
	want := []Request{
		{Server: "hub", Method: "GET", Path: "/org/m/resolve/main/sub%2Fdeep/c.bin", RawQuery: "x=1", Range: "bytes=1-2", Authorization: "Bearer hf_a", Accept: "*/*"},
		{Server: "cdn", Method: "GET", Path: loc.EscapedPath(), RawQuery: loc.RawQuery, Range: "bytes=1-2"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Requests:\n got %+v\nwant %+v", got, want)
	}
}

// FuzzServe sends whatever a client could to both servers: nothing may
// panic, and every answer is a valid HTTP status.
func FuzzServe(f *testing.F) {
	for _, s := range [][4]string{
		{"GET", "/api/models/org/m/revision/main?blobs=true", "", ""},
		{"GET", "/api/models/org/m/tree/main/sub?recursive=true&expand=true&cursor=aHVidGVzdDoy", "", ""},
		{"POST", "/api/models/org/m/paths-info/main", "", `{"paths":["a.txt","sub",""],"expand":true}`},
		{"POST", "/api/models/org/m/paths-info/main", "", `paths=a.txt&expand=1`},
		{"GET", "/org/m/resolve/main/sub/deep/c.bin", "bytes=-1", ""},
		{"HEAD", "/org/m/resolve/v1/a.txt", "bytes=0-0", ""},
		{"GET", "/org/m/resolve/main/endless-1", "bytes=9223372036854775807-", ""},
		{"GET", "/lfs/x?repo=org%2Fm&path=a&sig=0", "", ""},
		{"GET", "/a/%2F/resolve/%2F/%2F", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, method, target, rng, body string) {
		h, _, _, _ := sample(t)
		h.EndlessPages("org/m")
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		for _, serve := range []http.HandlerFunc{h.serveHub, h.serveCDN} {
			req := &http.Request{Method: method, URL: u, Header: http.Header{"Range": {rng}},
				Body: io.NopCloser(strings.NewReader(body)), Host: "127.0.0.1"}
			if strings.HasPrefix(body, "{") {
				req.Header.Set("Content-Type", "application/json")
			} else {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			w := httptest.NewRecorder()
			serve(w, req)
			if w.Code < 200 || w.Code > 599 {
				t.Errorf("%s %s: status %d", method, target, w.Code)
			}
			if w.Code == 206 && w.Header().Get("Content-Length") != fmt.Sprint(w.Body.Len()) && method != "HEAD" {
				t.Errorf("%s %s Range %q: Content-Length %s for %d bytes", method, target, rng, w.Header().Get("Content-Length"), w.Body.Len())
			}
		}
	})
}
