// Package hubtest is an in-process Hugging Face Hub for tests: the part of
// the Hub's HTTP protocol that downloads use (revision info, the paginated
// tree API, paths-info, resolve with Range, LFS files redirected to a CDN on
// another origin, the Hub's error codes for private and gated repos), as
// described in docs of the official clients and checked against
// @huggingface/hub 2.17.5 by this package's oracle test. It can also lie:
// serve bytes that do not match what listings and headers announce
// (Corrupt) and page a listing forever (EndlessPages).
//
// It never speaks Xet: no Xet headers or content types, no xetHash in
// listings, so every client downloads over plain HTTP.
package hubtest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
)

// File is the content of one file of a commit.
type File struct {
	Data []byte // kept, not copied: do not change it afterwards
	// LFS files are listed with lfs{oid: sha256, size, pointerSize} and
	// resolve to a 302 to the CDN; other files are plain git files, served
	// by the resolve endpoint with the quoted git blob sha1 as ETag.
	LFS bool
}

// Access is who may read a repository.
type Access int

const (
	// Public repositories answer anyone; a token, valid or not, is ignored.
	Public Access = iota
	// Private repositories look missing to others: 401 RepoNotFound without
	// a token, 404 RepoNotFound with one that is not allowed.
	Private
	// Gated repositories say so: 401 GatedRepo without a token, 403
	// GatedRepo with one that is not allowed.
	Gated
)

func (a Access) String() string {
	switch a {
	case Public:
		return "public"
	case Private:
		return "private"
	case Gated:
		return "gated"
	}
	return "unknown"
}

// Request is what the fixture recorded of one request.
type Request struct {
	Server   string // "hub" or "cdn"
	Method   string
	Path     string // escaped, as sent
	RawQuery string
	Range    string // the Range header, as sent
	// Authorization is the header as sent ("Bearer hf_..."), "" if none: a
	// CDN request with one means the client leaked its token cross-origin.
	Authorization string
	Accept        string // the Accept header, as sent
}

// Hub is a running fixture Hub. Its methods are safe to call while clients
// use it; Commit, Tag and SetAccess fail the test on misuse.
type Hub struct {
	URL string // http://127.0.0.1:PORT, no trailing slash: the hub endpoint
	CDN string // http://127.0.0.1:PORT, another origin, where LFS files redirect

	t        failer
	mu       sync.Mutex
	repos    map[string]*repo
	pageSize int
	seen     []Request
}

type repo struct {
	name     string // "org/name"
	access   Access
	tokens   []string
	branches map[string]string // name → commit sha
	tags     map[string]string
	commits  map[string]*commit
	blobs    map[string][]byte // sha256 → content of LFS files, for the CDN
	corrupt  map[string][]byte // path → bytes served instead of the file's
	endless  bool
}

// failer is what the Hub needs of a testing.TB: misuse fails the test (or,
// outside a test, panics: see NewServer).
type failer interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// Start runs the Hub on one loopback listener and its CDN on another (a
// different port is a different origin, so clients must drop Authorization
// on the redirect); both stop when the test ends.
func Start(t testing.TB) *Hub {
	t.Helper()
	h, stop := start(t)
	t.Cleanup(stop)
	return h
}

// NewServer is Start outside a test (make demo's Hub, hack/hub-mem): misuse
// of Commit, Tag or SetAccess panics. stop closes both listeners.
func NewServer() (h *Hub, stop func()) { return start(panicker{}) }

func start(t failer) (*Hub, func()) {
	h := &Hub{t: t, repos: map[string]*repo{}, pageSize: 2}
	hub := httptest.NewServer(http.HandlerFunc(h.serveHub))
	cdn := httptest.NewServer(http.HandlerFunc(h.serveCDN))
	h.URL, h.CDN = hub.URL, cdn.URL
	return h, func() { hub.Close(); cdn.Close() }
}

type panicker struct{}

func (panicker) Helper()                           {}
func (panicker) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (panicker) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// repo returns the named repository, creating it (public, empty); h.mu
// must be held.
func (h *Hub) repo(name string) *repo {
	r := h.repos[name]
	if r == nil {
		r = &repo{name: name, branches: map[string]string{}, tags: map[string]string{},
			commits: map[string]*commit{}, blobs: map[string][]byte{}, corrupt: map[string][]byte{}}
		h.repos[name] = r
	}
	return r
}

// Commit makes a commit of repo ("org/name") holding exactly files, moves
// branch to it (creating repo and branch as needed) and returns the commit's
// 40-hex sha, a real git commit id that depends only on repo, parent and
// content. The parent is the branch's head; a new branch starts from main,
// as the Hub's create_branch does, or has no parent when main does not
// exist either. Paths are served verbatim, so a test can commit names such
// as "../x" that a client must refuse; a path that is also another's
// directory fails the test.
func (h *Hub) Commit(repo, branch string, files map[string]File) string {
	h.t.Helper()
	if err := checkRepo(repo); err != nil {
		h.t.Fatal(err)
		return ""
	}
	if branch == "" {
		h.t.Fatalf("hubtest: Commit to %s: empty branch name", repo)
		return ""
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.repo(repo)
	head, ok := r.branches[branch]
	if !ok {
		head = r.branches["main"]
	}
	c, err := buildCommit(repo, r.commits[head], files)
	if err != nil {
		h.t.Fatal(err)
		return ""
	}
	if old := r.commits[c.sha]; old != nil {
		c = old // the same commit made again: keep the first
	}
	r.commits[c.sha] = c
	r.branches[branch] = c.sha
	for _, e := range c.entries {
		if e.lfs {
			r.blobs[e.sha256] = e.data
		}
	}
	return c.sha
}

// checkRepo accepts "org/name", the only form the routes (and the JS
// client, for models) take.
func checkRepo(name string) error {
	org, model, ok := strings.Cut(name, "/")
	if !ok || org == "" || model == "" || strings.Contains(model, "/") {
		return fmt.Errorf("hubtest: repo %q is not ORG/NAME", name)
	}
	return nil
}

// Tag points tag at commit, a sha Commit returned for repo.
func (h *Hub) Tag(repo, tag, commit string) {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.repos[repo]
	if r == nil || r.commits[commit] == nil {
		h.t.Fatalf("hubtest: Tag %s: %s has no commit %q", tag, repo, commit)
		return
	}
	r.tags[tag] = commit
}

// SetAccess sets who may read repo (creating it, empty, if need be): a is
// Public (the default), Private or Gated, and tokens are the "hf_..."
// tokens allowed to read a private or gated repo, replacing any given
// before.
func (h *Hub) SetAccess(repo string, a Access, tokens ...string) {
	h.t.Helper()
	if err := checkRepo(repo); err != nil {
		h.t.Fatal(err)
		return
	}
	if a != Public && a != Private && a != Gated {
		h.t.Fatalf("hubtest: SetAccess %s: unknown access %d", repo, a)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.repo(repo)
	r.access, r.tokens = a, slices.Clone(tokens)
}

// PageSize sets the number of tree entries per page (default 2, so that
// listings of a few files already span pages; at least 1). A smaller
// limit= in the request wins, a larger one does not, so a client asking
// for big pages is still paginated.
func (h *Hub) PageSize(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pageSize = max(n, 1)
}

// Corrupt makes downloads of path in repo (any revision) serve data instead
// of the file's bytes: the CDN for an LFS file, the resolve endpoint for
// another. Listings, paths-info and every header (ETag, X-Linked-Etag,
// X-Linked-Size, the total of Content-Range) still announce the original
// sha256, blob id and size, so only a client that checks the bytes notices.
// Range requests select bytes of data. data is kept, not copied.
func (h *Hub) Corrupt(repo, path string, data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.repo(repo).corrupt[path] = data
}

// EndlessPages makes every tree listing of repo, at any revision and path,
// announce a next page, forever: after the real entries come empty files
// "endless-N" (under the listed path) never listed before, which the other
// endpoints serve too. A client must cap what it follows.
func (h *Hub) EndlessPages(repo string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.repo(repo).endless = true
}

// Requests returns every request seen so far by the hub and the CDN, oldest
// first, including those answered with an error.
func (h *Hub) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.seen)
}

func (h *Hub) record(server string, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, Request{Server: server, Method: r.Method, Path: r.URL.EscapedPath(),
		RawQuery: r.URL.RawQuery, Range: r.Header.Get("Range"),
		Authorization: r.Header.Get("Authorization"), Accept: r.Header.Get("Accept")})
}
