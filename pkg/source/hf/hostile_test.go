package hf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// A Hub that lies: each test gives its own answers. (The honest protocol
// is tested against internal/hubtest, which the official JS client checks.)

const commit = "0123456789abcdef0123456789abcdef01234567"

func lyingHub(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	c, err := New(Options{Endpoint: ts.URL, Token: "hf_secret", MaxFiles: 10, MaxPages: 5})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantClass(t *testing.T, err, class error, text string) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Fatalf("err = %v, want class %v", err, class)
	}
	if !strings.Contains(err.Error(), text) {
		t.Errorf("err = %v, want it to say %q", err, text)
	}
	if strings.Contains(err.Error(), "hf_secret") {
		t.Errorf("the token is in the error: %v", err)
	}
}

func tree(entries ...string) string { return "[" + strings.Join(entries, ",") + "]" }

const okFile = `{"type":"file","path":"config.json","oid":"` + commit + `","size":2}`

func TestListRefusesLyingListings(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name, body, text string
		class            error
	}{
		{"escaping path", tree(`{"type":"file","path":"../../etc/passwd","oid":"` + commit + `","size":1}`), "not a relative path", source.ErrProtocol},
		{"absolute path", tree(`{"type":"file","path":"/etc/passwd","oid":"` + commit + `","size":1}`), "not a relative path", source.ErrProtocol},
		{"twice", tree(okFile, okFile), "listed twice", source.ErrProtocol},
		{"negative size", tree(`{"type":"file","path":"a","oid":"` + commit + `","size":-1}`), "size of -1", source.ErrProtocol},
		{"huge size", tree(`{"type":"file","path":"a","oid":"` + commit + `","size":99999999999999999}`), "size of", source.ErrProtocol},
		{"bad lfs oid", tree(`{"type":"file","path":"w","oid":"` + commit + `","size":3,"lfs":{"oid":"xyz","size":3}}`), "not a SHA-256", source.ErrProtocol},
		{"lfs size differs", tree(`{"type":"file","path":"w","oid":"` + commit + `","size":3,"lfs":{"oid":"` + sha + `","size":4}}`), "LFS object as 4", source.ErrProtocol},
		{"unknown type", tree(`{"type":"symlink","path":"w"}`), `type "symlink"`, source.ErrProtocol},
		{"not JSON", `<html>`, "not the JSON expected", source.ErrProtocol},
		{"too many files", tree(manyFiles(11)), "more than 10 files", source.ErrLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := lyingHub(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, tc.body) })
			_, err := c.List(context.Background(), "org/model", commit)
			wantClass(t, err, tc.class, tc.text)
		})
	}
}

func manyFiles(n int) string {
	var s []string
	for i := range n {
		s = append(s, fmt.Sprintf(`{"type":"file","path":"f%d","oid":"%s","size":1}`, i, commit))
	}
	return strings.Join(s, ",")
}

func TestListPagesStayOnTheEndpoint(t *testing.T) {
	var other *httptest.Server
	other = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the client followed a link off the endpoint (Authorization %q)", r.Header.Get("Authorization"))
	}))
	defer other.Close()
	for name, link := range map[string]func(host string) string{
		"another host": func(string) string {
			return "<" + other.URL + "/api/models/org/model/tree/" + commit + "?cursor=2>; rel=\"next\""
		},
		"another repo": func(h string) string {
			return "<http://" + h + "/api/models/org/other/tree/" + commit + "?cursor=2>; rel=\"next\""
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := lyingHub(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", link(r.Host))
				io.WriteString(w, tree(okFile))
			})
			_, err := c.List(context.Background(), "org/model", commit)
			wantClass(t, err, source.ErrProtocol, "leaves")
		})
	}
	t.Run("endless", func(t *testing.T) {
		pages := 0
		c := lyingHub(t, func(w http.ResponseWriter, r *http.Request) {
			pages++
			w.Header().Set("Link", fmt.Sprintf("<http://%s/api/models/org/model/tree/%s?cursor=%d>; rel=\"next\"", r.Host, commit, pages))
			io.WriteString(w, "[]")
		})
		_, err := c.List(context.Background(), "org/model", commit)
		wantClass(t, err, source.ErrLimit, "more than 5 pages")
		if pages != 5 {
			t.Errorf("read %d pages at a limit of 5", pages)
		}
	})
}

func TestResolveRefusesLies(t *testing.T) {
	for name, body := range map[string]string{
		"not hex":      `{"sha":"main"}`,
		"other commit": `{"sha":"` + strings.Repeat("f", 40) + `"}`,
		"huge":         `{"sha":"` + strings.Repeat("a", 2<<20) + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			c := lyingHub(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
			_, err := c.Resolve(context.Background(), "org/model", commit)
			if name == "huge" {
				wantClass(t, err, source.ErrLimit, "more than")
				return
			}
			wantClass(t, err, source.ErrProtocol, "")
		})
	}
}

func TestOpenRefusesWrongAnswers(t *testing.T) {
	f := model.File{Path: "w.bin", Size: 100, ETag: strings.Repeat("ab", 32), Digest: model.Digest("sha256:" + strings.Repeat("ab", 32))}
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter)
		class error
		text  string
	}{
		{"other range", func(w http.ResponseWriter) {
			w.Header().Set("Content-Range", "bytes 0-9/100")
			w.WriteHeader(http.StatusPartialContent)
		}, source.ErrProtocol, "got 0-9"},
		{"other size", func(w http.ResponseWriter) {
			w.Header().Set("Content-Range", "bytes 10-19/200")
			w.WriteHeader(http.StatusPartialContent)
		}, source.ErrProtocol, "200 bytes now"},
		{"whole file for a part", func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) }, source.ErrProtocol, "whole file"},
		{"other sha256", func(w http.ResponseWriter) {
			w.Header().Set("ETag", `"`+strings.Repeat("cd", 32)+`"`)
			w.Header().Set("Content-Range", "bytes 10-19/100")
			w.WriteHeader(http.StatusPartialContent)
		}, source.ErrProtocol, "serves SHA-256"},
		{"gated", func(w http.ResponseWriter) {
			w.Header().Set("X-Error-Code", "GatedRepo")
			w.Header().Set("X-Error-Message", "Access to model org/model is restricted\r\nInjected: header")
			w.WriteHeader(http.StatusForbidden)
		}, source.ErrAccessDenied, "gated repo"},
		{"throttled", func(w http.ResponseWriter) { w.WriteHeader(http.StatusTooManyRequests) }, source.ErrUnreachable, "429"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := lyingHub(t, func(w http.ResponseWriter, r *http.Request) { tc.serve(w) })
			_, err := c.Open(context.Background(), "org/model", commit, f, 10, 20)
			wantClass(t, err, tc.class, tc.text)
		})
	}
	t.Run("short body", func(t *testing.T) {
		c := lyingHub(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 10-19/100")
			w.WriteHeader(http.StatusPartialContent)
			io.WriteString(w, "12345")
		})
		r, err := c.Open(context.Background(), "org/model", commit, f, 10, 20)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if b, err := io.ReadAll(r); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("read %q, %v; want io.ErrUnexpectedEOF", b, err)
		}
	})
	t.Run("bad ranges are ours to refuse", func(t *testing.T) {
		c := lyingHub(t, func(w http.ResponseWriter, r *http.Request) { t.Error("no request expected") })
		for _, r := range [][2]int64{{-1, 5}, {5, 4}, {0, 101}} {
			if _, err := c.Open(context.Background(), "org/model", commit, f, r[0], r[1]); err == nil {
				t.Errorf("range %v accepted", r)
			}
		}
	})
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Endpoint: "ftp://hub"}, {Endpoint: "http://user:pw@hub"}, {Endpoint: "http://hub/path"},
		{Token: "hf_a\r\nX-Injected: 1"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%+v accepted", o)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("the password is in the error: %v", err)
		}
	}
	for _, repo := range []string{"model", "org/model/x", "../x", "org/..", "org/a b", ""} {
		if err := ValidRepo(repo); err == nil {
			t.Errorf("repo %q accepted", repo)
		}
	}
}
