package hubtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// The Hub's error codes (X-Error-Code), which both official clients map to
// their error types.
const (
	codeRepoNotFound     = "RepoNotFound"
	codeGatedRepo        = "GatedRepo"
	codeRevisionNotFound = "RevisionNotFound"
	codeEntryNotFound    = "EntryNotFound"
)

var commitSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// serveHub routes on the escaped path by hand: ServeMux patterns for
// /{ns}/{name}/resolve/{rev}/{path...} and /api/models/... conflict, and
// the revision must be unescaped as one segment ("refs%2Fpr%2F1"), which
// r.URL.Path has already lost. Without a ServeMux, paths are not cleaned
// either, so "a/../b" reaches the handlers as sent.
func (h *Hub) serveHub(w http.ResponseWriter, r *http.Request) {
	h.record("hub", r)
	seg, ok := segments(r.URL.EscapedPath())
	switch {
	case !ok:
		h.fail(w, r, http.StatusBadRequest, "", "invalid percent-encoding in the path")
	case len(seg) >= 4 && seg[0] == "api" && seg[1] == "models" && seg[2] != "" && seg[3] != "":
		h.api(w, r, seg[2]+"/"+seg[3], seg[4:])
	case len(seg) >= 5 && seg[0] != "" && seg[1] != "" && seg[2] == "resolve":
		// The revision is one segment; the file path is the rest.
		h.resolve(w, r, seg[0]+"/"+seg[1], seg[3], strings.Join(seg[4:], "/"))
	default:
		h.notFound(w, r)
	}
}

// api serves /api/models/{repo}/... with rest the segments after the repo.
func (h *Hub) api(w http.ResponseWriter, r *http.Request, repo string, rest []string) {
	switch {
	case len(rest) == 0:
		if h.allow(w, r, http.MethodGet, http.MethodHead) {
			h.modelInfo(w, r, repo, "main")
		}
	case rest[0] == "revision" && len(rest) >= 2:
		// An unencoded slash in a revision is taken as part of it: nothing
		// follows the revision here.
		if h.allow(w, r, http.MethodGet, http.MethodHead) {
			h.modelInfo(w, r, repo, strings.Join(rest[1:], "/"))
		}
	case rest[0] == "tree" && len(rest) >= 2:
		if h.allow(w, r, http.MethodGet, http.MethodHead) {
			h.tree(w, r, repo, rest[1], strings.Join(rest[2:], "/"))
		}
	case rest[0] == "paths-info" && len(rest) >= 2:
		if h.allow(w, r, http.MethodPost) {
			h.pathsInfo(w, r, repo, strings.Join(rest[1:], "/"))
		}
	default:
		h.notFound(w, r)
	}
}

// segments splits an escaped path into its unescaped segments, without the
// leading "/".
func segments(escaped string) ([]string, bool) {
	seg := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	for i, s := range seg {
		u, err := url.PathUnescape(s)
		if err != nil {
			return nil, false
		}
		seg[i] = u
	}
	return seg, true
}

func (h *Hub) allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	if slices.Contains(methods, r.Method) {
		return true
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	h.fail(w, r, http.StatusMethodNotAllowed, "", r.Method+" is not allowed here")
	return false
}

func (h *Hub) notFound(w http.ResponseWriter, r *http.Request) {
	h.fail(w, r, http.StatusNotFound, "", "Sorry, we can't find the page you are looking for.")
}

// fail answers as the Hub does: X-Error-Code (when there is one) and
// X-Error-Message, and a JSON {"error": msg}, which the JS client reads
// only when the Content-Type says JSON.
func (h *Hub) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	// net/http turns newlines in header values into spaces; other control
	// bytes in a message made from the request are quoted away here.
	w.Header().Set("X-Error-Message", headerSafe(msg))
	writeJSON(w, r, status, map[string]string{"error": msg})
}

func headerSafe(s string) string {
	if !strings.ContainsFunc(s, func(c rune) bool { return c < 0x20 || c == 0x7f || c >= 0x80 }) {
		return s
	}
	q := fmt.Sprintf("%+q", s)
	return q[1 : len(q)-1]
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only fixture types are marshalled
		status, body = http.StatusInternalServerError, []byte(`{"error":"hubtest: cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// bearer returns the token of "Authorization: Bearer TOKEN" and whether
// the header was sent at all; any other scheme counts as a wrong token.
func bearer(r *http.Request) (token string, sent bool) {
	a := r.Header.Get("Authorization")
	if a == "" {
		return "", false
	}
	scheme, tok, ok := strings.Cut(a, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true
	}
	return strings.TrimSpace(tok), true
}

// view is what a handler needs of a repository at a revision, taken under
// the lock: commits are immutable, so it is used without it.
type view struct {
	repo    string
	c       *commit
	access  Access
	endless bool
	commits map[string]*commit // a copy, for lastCommit
}

// open checks access to repo and resolves rev, answering the error itself
// when it returns false. Access comes first, as on the Hub: a private repo
// does not tell a stranger whether a revision exists.
func (h *Hub) open(w http.ResponseWriter, r *http.Request, name, rev string) (view, bool) {
	token, sent := bearer(r)
	h.mu.Lock()
	rp := h.repos[name]
	var status int
	var code, msg string
	switch {
	case rp == nil || rp.access == Private && !slices.Contains(rp.tokens, token):
		status, code, msg = http.StatusNotFound, codeRepoNotFound, "Repository not found"
		if !sent {
			status = http.StatusUnauthorized
		}
	case rp.access == Gated && !sent:
		status, code = http.StatusUnauthorized, codeGatedRepo
		msg = fmt.Sprintf("Access to model %s is restricted. You must have access to it and be authenticated to access it. Please log in.", name)
	case rp.access == Gated && !slices.Contains(rp.tokens, token):
		status, code = http.StatusForbidden, codeGatedRepo
		msg = fmt.Sprintf("Access to model %s is restricted and you are not in the authorized list. Visit https://huggingface.co/%s to ask for access.", name, name)
	}
	var v view
	if status == 0 {
		v = view{repo: name, c: rp.resolve(rev), access: rp.access, endless: rp.endless}
		if v.c != nil {
			v.commits = make(map[string]*commit, len(rp.commits))
			for k, c := range rp.commits {
				v.commits[k] = c
			}
		}
	}
	h.mu.Unlock()
	if status != 0 {
		h.fail(w, r, status, code, msg)
		return view{}, false
	}
	if v.c == nil {
		h.fail(w, r, http.StatusNotFound, codeRevisionNotFound, fmt.Sprintf("Invalid rev id: %s", rev))
		return view{}, false
	}
	return v, true
}

// resolve finds the commit of a branch, tag or commit sha; "HEAD" is the
// default branch, main. The caller holds h.mu.
func (rp *repo) resolve(rev string) *commit {
	if rev == "HEAD" {
		rev = "main"
	}
	if b, ok := strings.CutPrefix(rev, "refs/heads/"); ok {
		return rp.commits[rp.branches[b]]
	}
	if t, ok := strings.CutPrefix(rev, "refs/tags/"); ok {
		return rp.commits[rp.tags[t]]
	}
	if sha, ok := rp.branches[rev]; ok {
		return rp.commits[sha]
	}
	if sha, ok := rp.tags[rev]; ok {
		return rp.commits[sha]
	}
	if commitSHA.MatchString(rev) {
		return rp.commits[rev]
	}
	return nil
}

// file finds path in v's commit: a file or directory entry, or in an
// endless repository one of the empty files its listings invent.
func (v view) file(path string) *entry {
	if e := v.c.entries[path]; e != nil {
		return e
	}
	if v.endless && endlessName.MatchString(baseName(path)) {
		return fileEntry(path, File{})
	}
	return nil
}

var endlessName = regexp.MustCompile(`^endless-[0-9]+$`)
