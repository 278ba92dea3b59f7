package hubtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Plain Go tests of the fixture's own behaviour, mostly what the JS oracle
// never exercises: edge cases of Range, errors, HEAD, the form body of
// paths-info, the lying modes.

type response struct {
	*http.Response
	body []byte
}

// noRedirect lets the tests see the 302 of an LFS file.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// call sends one request; hdr holds alternating names and values. Every
// answer is checked for Xet, which would switch clients off plain HTTP.
func call(t *testing.T, method, target, body string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range resp.Header {
		all := strings.ToLower(k + ": " + strings.Join(vs, ", "))
		if strings.HasPrefix(strings.ToLower(k), "x-xet") || strings.Contains(all, "xet-") || strings.Contains(all, "vnd.xet") {
			t.Errorf("%s %s: Xet header %s", method, target, all)
		}
	}
	if bytes.Contains(b, []byte("xetHash")) {
		t.Errorf("%s %s: xetHash in %s", method, target, b)
	}
	return response{resp, b}
}

// wantStatus checks the status and, for errors, the Hub's error shape.
func (r response) wantStatus(t *testing.T, status int, code string) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: %d %s, want %d", r.Request.Method, r.Request.URL, r.StatusCode, r.body, status)
	}
	if got := r.Header.Get("X-Error-Code"); got != code {
		t.Errorf("%s %s: X-Error-Code %q, want %q", r.Request.Method, r.Request.URL, got, code)
	}
	if status < 400 || r.Request.URL.Path == "" || r.Request.Method == http.MethodHead {
		return
	}
	var e struct{ Error string }
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") || json.Unmarshal(r.body, &e) != nil || e.Error == "" {
		t.Errorf("error body %q (%s), want JSON {\"error\": ...}", r.body, r.Header.Get("Content-Type"))
	}
	if r.Header.Get("X-Error-Message") == "" {
		t.Error("no X-Error-Message")
	}
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("%s: %v", r.body, err)
	}
}

// sample is a repo of two commits: v1 (tagged v1) and main, which changed
// a.txt. Page size stays 2.
func sample(t *testing.T) (h *Hub, c1, c2 string, v1 map[string]File) {
	h = Start(t)
	v1 = map[string]File{
		"a.txt":          {Data: []byte("hello")},
		"empty":          {},
		"lfs-empty":      {Data: nil, LFS: true},
		"sub/b.txt":      {Data: []byte("bee")},
		"sub/deep/c.bin": {Data: pseudoRandom(9, 1000), LFS: true},
	}
	c1 = h.Commit("org/m", "main", v1)
	h.Tag("org/m", "v1", c1)
	v2 := map[string]File{"a.txt": {Data: []byte("hello again")}}
	for p, f := range v1 {
		if p != "a.txt" {
			v2[p] = f
		}
	}
	c2 = h.Commit("org/m", "main", v2)
	return h, c1, c2, v1
}

func TestRevision(t *testing.T) {
	h, c1, c2, _ := sample(t)
	h.Commit("org/m", "feature/x", map[string]File{"f": {Data: []byte("f")}})
	fx := h.Commit("org/m", "refs/pr/1", map[string]File{"pr": {Data: []byte("pr")}})
	for rev, want := range map[string]string{
		"main": c2, "HEAD": c2, "refs%2Fheads%2Fmain": c2, "v1": c1, "refs%2Ftags%2Fv1": c1,
		c1: c1, c2: c2, "refs%2Fpr%2F1": fx, "refs/pr/1": fx,
	} {
		var info struct{ ID, SHA string }
		call(t, "GET", h.URL+"/api/models/org/m/revision/"+rev, "").json(t, &info)
		if info.SHA != want || info.ID != "org/m" {
			t.Errorf("revision %s: %+v, want sha %s", rev, info, want)
		}
	}
	var info struct{ SHA string }
	call(t, "GET", h.URL+"/api/models/org/m", "").json(t, &info)
	if info.SHA != c2 {
		t.Errorf("model info: sha %s, want main %s", info.SHA, c2)
	}
	for _, rev := range []string{"nope", strings.ToUpper(c1), c1[:7], "0000000000000000000000000000000000000000"} {
		call(t, "GET", h.URL+"/api/models/org/m/revision/"+rev, "").wantStatus(t, 404, "RevisionNotFound")
	}

	// Siblings: only names, unless blobs=true; LFS keys its sha256 "sha256".
	var sib struct {
		Siblings []struct {
			RFilename string
			Size      *int64
			BlobID    string
			LFS       *struct {
				SHA256      string
				Size        int64
				PointerSize int
			}
		}
	}
	call(t, "GET", h.URL+"/api/models/org/m/revision/v1", "").json(t, &sib)
	if len(sib.Siblings) != 5 || sib.Siblings[0].Size != nil {
		t.Errorf("siblings without blobs: %+v", sib.Siblings)
	}
	call(t, "GET", h.URL+"/api/models/org/m/revision/v1?blobs=true", "").json(t, &sib)
	last := sib.Siblings[len(sib.Siblings)-1]
	if last.RFilename != "sub/deep/c.bin" || last.Size == nil || *last.Size != 1000 || last.LFS == nil ||
		last.LFS.SHA256 != sha256hex(pseudoRandom(9, 1000)) || last.LFS.PointerSize < 100 || len(last.BlobID) != 40 {
		t.Errorf("sibling with blobs: %+v %+v", last, last.LFS)
	}
}

func TestCommitIDs(t *testing.T) {
	files := map[string]File{"x": {Data: []byte("x")}, "d/y": {Data: []byte("y"), LFS: true}}
	a, b := Start(t), Start(t)
	if ca, cb := a.Commit("org/a", "main", files), b.Commit("org/a", "main", files); ca != cb || !commitSHA.MatchString(ca) {
		t.Errorf("same repo and content: %s and %s", ca, cb)
	}
	if ca, cb := a.Commit("org/b", "main", files), a.Commit("org/c", "main", files); ca == cb {
		t.Error("two repos, one commit id")
	}
	// Paths no git server accepts are served as they are; a path that is
	// also a directory fails the test.
	odd := a.Commit("org/odd", "main", map[string]File{"../x": {}, "/abs": {}, "a//b": {}})
	var names []string
	for _, e := range slices.Concat(listAll(t, a.URL+"/api/models/org/odd/tree/"+odd+"?recursive=true", 100)...) {
		names = append(names, e.Type+":"+e.Path)
	}
	if want := []string{"directory:..", "file:../x", "file:/abs", "directory:a", "directory:a/", "file:a//b"}; !slices.Equal(names, want) {
		t.Errorf("odd paths listed %q, want %q", names, want)
	}
	ft := &fatalTB{TB: t}
	ft.h = Start(ft)
	if c := ft.h.Commit("org/bad", "main", map[string]File{"a": {}, "a/b": {}}); c != "" || ft.fatal == "" {
		t.Errorf("file and directory: commit %q, fatal %q", c, ft.fatal)
	}
	for _, repo := range []string{"model", "/m", "org/", "a/b/c", ""} {
		ft.fatal = ""
		if c := ft.h.Commit(repo, "main", nil); c != "" || ft.fatal == "" {
			t.Errorf("repo %q: commit %q, fatal %q", repo, c, ft.fatal)
		}
	}
	ft.fatal = ""
	if ft.h.Tag("org/bad", "t", "1234"); ft.fatal == "" {
		t.Error("Tag of an unknown commit did not fail the test")
	}
}

// fatalTB records a Fatal instead of stopping the test.
type fatalTB struct {
	testing.TB
	h     *Hub
	fatal string
}

func (f *fatalTB) Fatal(args ...any)                 { f.fatal = fmt.Sprint(args...) }
func (f *fatalTB) Fatalf(format string, args ...any) { f.fatal = fmt.Sprintf(format, args...) }

// TestGitIDs checks against git itself that the ids are those of the
// commit described: blob, LFS pointer, tree and commit.
func TestGitIDs(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git")
	}
	h, c1, _, v1 := sample(t)
	dir := t.TempDir()
	run := func(env []string, args ...string) string {
		cmd := exec.Command(git, append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %q: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run(nil, "init", "-q")
	for p, f := range v1 {
		data := f.Data
		if f.LFS {
			data = lfsPointer(sha256hex(f.Data), int64(len(f.Data)))
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(nil, "add", "-A")
	tree := run(nil, "write-tree")
	date := fmt.Sprintf("GIT_AUTHOR_DATE=@%d +0000", commitEpoch.Unix())
	env := []string{"GIT_AUTHOR_NAME=hubtest", "GIT_AUTHOR_EMAIL=hubtest@modelcache.invalid", date,
		"GIT_COMMITTER_NAME=hubtest", "GIT_COMMITTER_EMAIL=hubtest@modelcache.invalid", "GIT_COMMITTER" + date[len("GIT_AUTHOR"):]}
	if got := run(env, "commit-tree", tree, "-m", "hubtest commit 1 of org/m"); got != c1 {
		t.Errorf("git commit-tree: %s, fixture %s", got, c1)
	}
	for _, e := range slices.Concat(listAll(t, h.URL+"/api/models/org/m/tree/v1?recursive=true", 100)...) {
		if want := run(nil, "rev-parse", tree+":"+e.Path); e.Oid != want {
			t.Errorf("%s: oid %s, git %s", e.Path, e.Oid, want)
		}
	}
}

var linkNext = regexp.MustCompile(`<(https?://[^>]+)>;\s+rel="([^"]+)"`) // the JS client's parser

// listAll follows Link rel="next" from target and returns the pages.
func listAll(t *testing.T, target string, maxPages int) (pages [][]treeEntry) {
	t.Helper()
	for target != "" && len(pages) < maxPages {
		r := call(t, "GET", target, "")
		r.wantStatus(t, 200, "")
		var page []treeEntry
		r.json(t, &page)
		pages = append(pages, page)
		target = ""
		if l := r.Header.Get("Link"); l != "" {
			m := linkNext.FindStringSubmatch(l)
			if m == nil || m[2] != "next" {
				t.Fatalf("Link %q is not what the JS client follows", l)
			}
			target = m[1]
		}
	}
	return pages
}

func paths(pages [][]treeEntry) (out []string) {
	for _, p := range pages {
		for _, e := range p {
			out = append(out, e.Path)
		}
	}
	return out
}

func TestTree(t *testing.T) {
	h, c1, _, _ := sample(t)
	base := h.URL + "/api/models/org/m/tree/"
	pages := listAll(t, base+c1+"?recursive=true&expand=false", 100)
	want := []string{"a.txt", "empty", "lfs-empty", "sub", "sub/b.txt", "sub/deep", "sub/deep/c.bin"}
	if got := paths(pages); !slices.Equal(got, want) || len(pages) != 4 {
		t.Errorf("recursive listing in %d pages: %q, want %q", len(pages), got, want)
	}
	for _, e := range slices.Concat(pages...) {
		dir := e.Path == "sub" || e.Path == "sub/deep"
		lfs := e.Path == "lfs-empty" || e.Path == "sub/deep/c.bin"
		if !commitSHA.MatchString(e.Oid) || (e.Type == "directory") != dir || (e.Type == "file") == dir ||
			(e.LFS != nil) != lfs || e.LastCommit != nil {
			t.Errorf("entry %+v", e)
		}
	}
	if c := slices.Concat(pages...)[6]; c.LFS.Oid != sha256hex(pseudoRandom(9, 1000)) || c.LFS.Size != 1000 || c.Size != 1000 {
		t.Errorf("LFS entry %+v %+v", c, c.LFS)
	}
	for target, want := range map[string][]string{
		base + "main":                          {"a.txt", "empty", "lfs-empty", "sub"},
		base + "main/sub?recursive=false":      {"sub/b.txt", "sub/deep"},
		base + "v1/sub?recursive=True":         {"sub/b.txt", "sub/deep", "sub/deep/c.bin"},
		base + "v1/sub%2Fdeep":                 {"sub/deep/c.bin"},
		base + "main?recursive=1&limit=1":      want,
		base + "main?recursive=1&limit=100000": want,
	} {
		if got := paths(listAll(t, target, 100)); !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", target, got, want)
		}
	}
	if n := len(listAll(t, base+"main?recursive=1&limit=1", 100)); n != 7 {
		t.Errorf("limit=1: %d pages, want 7", n)
	}
	// expand=true adds lastCommit: a.txt changed in main, sub/b.txt did not.
	exp := slices.Concat(listAll(t, base+"main?expand=true", 100)...)
	if exp[0].LastCommit == nil || exp[0].LastCommit.ID == c1 || exp[3].LastCommit == nil || exp[3].LastCommit.ID != c1 {
		t.Errorf("expand: %+v %+v", exp[0].LastCommit, exp[3].LastCommit)
	}
	call(t, "GET", base+"main/nope", "").wantStatus(t, 404, "EntryNotFound")
	call(t, "GET", base+"main/a.txt", "").wantStatus(t, 404, "EntryNotFound")
	call(t, "GET", base+"nope", "").wantStatus(t, 404, "RevisionNotFound")
	for _, q := range []string{"cursor=garbage", "cursor=" + encodeCursor(-1)[:3], "limit=0", "limit=x", "recursive=maybe"} {
		call(t, "GET", base+"main?"+q, "").wantStatus(t, 400, "")
	}
	// A cursor past the end is an empty last page.
	if r := call(t, "GET", base+"main?cursor="+encodeCursor(1000), ""); string(r.body) != "[]" || r.Header.Get("Link") != "" {
		t.Errorf("past the end: %s, Link %q", r.body, r.Header.Get("Link"))
	}
}

func TestPathsInfo(t *testing.T) {
	h, c1, c2, _ := sample(t)
	target := h.URL + "/api/models/org/m/paths-info/main"
	var got []treeEntry // json.Unmarshal keeps fields absent from the JSON: reset before each
	call(t, "POST", target, `{"paths":["sub/b.txt","nope","sub","sub/b.txt","a.txt"],"expand":true}`,
		"Content-Type", "application/json").json(t, &got)
	if len(got) != 3 || got[0].Path != "sub/b.txt" || got[1].Type != "directory" || got[2].Path != "a.txt" ||
		got[0].LastCommit.ID != c1 || got[2].LastCommit.ID != c2 || got[2].LastCommit.Title == "" {
		t.Errorf("paths-info: %+v", got)
	}
	// The JS client needs exactly one entry for one path, and the Python
	// client posts a form.
	got = nil
	call(t, "POST", target, `{"paths":["sub/deep/c.bin"],"expand":false}`).json(t, &got)
	if len(got) != 1 || got[0].LFS == nil || got[0].LastCommit != nil {
		t.Errorf("one path: %+v", got)
	}
	got = nil
	call(t, "POST", target, "paths=nope&paths=a.txt&paths=empty", "Content-Type", "application/x-www-form-urlencoded").json(t, &got)
	if len(got) != 2 || got[0].Path != "a.txt" || got[1].Path != "empty" || got[0].Size != 11 {
		t.Errorf("form: %+v", got)
	}
	got = nil
	call(t, "POST", target, `{"paths":["nope"]}`).json(t, &got)
	if len(got) != 0 {
		t.Errorf("missing path: %+v", got)
	}
	call(t, "POST", target, `{"paths":`).wantStatus(t, 400, "")
	call(t, "POST", target, "paths=%zz", "Content-Type", "application/x-www-form-urlencoded").wantStatus(t, 400, "")
	call(t, "POST", target, strings.Repeat(" ", maxPathsInfoBody+1)).wantStatus(t, 400, "")
	call(t, "GET", target, "").wantStatus(t, 405, "")
	call(t, "POST", h.URL+"/api/models/org/m/paths-info/nope", `{"paths":["a.txt"]}`).wantStatus(t, 404, "RevisionNotFound")
}

func TestAccess(t *testing.T) {
	h := Start(t)
	files := map[string]File{"w.bin": {Data: []byte("weights"), LFS: true}, "c.json": {Data: []byte("{}")}}
	for _, r := range []string{"org/pub", "org/priv", "org/gated"} {
		h.Commit(r, "main", files)
	}
	h.SetAccess("org/priv", Private, "hf_priv")
	h.SetAccess("org/gated", Gated, "hf_gated", "hf_other")
	for _, c := range []struct {
		repo, auth string
		status     int
		code       string
	}{
		{"org/pub", "", 200, ""}, {"org/pub", "Bearer hf_whatever", 200, ""},
		{"org/priv", "", 401, "RepoNotFound"}, {"org/priv", "Bearer hf_gated", 404, "RepoNotFound"},
		{"org/priv", "Basic aGY6eA==", 404, "RepoNotFound"}, {"org/priv", "Bearer hf_priv", 200, ""},
		{"org/priv", "bearer  hf_priv", 200, ""},
		{"org/gated", "", 401, "GatedRepo"}, {"org/gated", "Bearer hf_priv", 403, "GatedRepo"},
		{"org/gated", "Bearer", 403, "GatedRepo"}, {"org/gated", "Bearer hf_other", 200, ""},
		{"org/none", "", 401, "RepoNotFound"}, {"org/none", "Bearer hf_priv", 404, "RepoNotFound"},
	} {
		for _, path := range []string{"/api/models/%s/revision/main", "/api/models/%s/tree/main", "/%s/resolve/main/c.json", "/%s/resolve/nope/c.json"} {
			var hdr []string
			if c.auth != "" {
				hdr = []string{"Authorization", c.auth}
			}
			r := call(t, "GET", h.URL+fmt.Sprintf(path, c.repo), "", hdr...)
			status, code := c.status, c.code
			if status == 200 && strings.Contains(path, "nope") {
				status, code = 404, "RevisionNotFound" // access first, then the revision
			}
			t.Run(fmt.Sprintf("%s %s %q", c.repo, path, c.auth), func(t *testing.T) { r.wantStatus(t, status, code) })
		}
	}
	h.SetAccess("org/priv", Public)
	call(t, "GET", h.URL+"/api/models/org/priv", "").wantStatus(t, 200, "")
}

func TestUnknownRoutes(t *testing.T) {
	h, _, _, _ := sample(t)
	for _, p := range []string{"/", "/api", "/api/models", "/api/models/org", "/api/models/org/", "/api/datasets/org/m",
		"/api/models/org/m/revision", "/api/models/org/m/tree", "/api/models/org/m/nope/main", "/org/m",
		"/org/m/resolve/main", "/org/m/blob/main/a.txt", "//resolve/main/a.txt", "/org/m/raw/main/a.txt"} {
		call(t, "GET", h.URL+p, "").wantStatus(t, 404, "")
	}
	call(t, "DELETE", h.URL+"/api/models/org/m", "").wantStatus(t, 405, "")
	call(t, "PUT", h.URL+"/org/m/resolve/main/a.txt", "").wantStatus(t, 405, "")
	if r := call(t, "HEAD", h.URL+"/api/models/org/m/revision/nope", ""); r.StatusCode != 404 || len(r.body) != 0 ||
		r.Header.Get("X-Error-Code") != "RevisionNotFound" {
		t.Errorf("HEAD of a missing revision: %d %q %v", r.StatusCode, r.body, r.Header)
	}
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
