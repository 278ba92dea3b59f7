package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/oauth2"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// A GCS server that lies: each test gives its own answers. (The honest
// protocol is tested against fake-gcs-server in gcs_test.go.)

const secretToken = "ya29.secret-token"

func lyingServer(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	c, err := New(Options{Endpoint: ts.URL, MaxFiles: 10, MaxPages: 5,
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: secretToken})})
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
	if strings.Contains(err.Error(), secretToken) {
		t.Errorf("the token is in the error: %v", err)
	}
}

const md5A = "DMF1ucDxtqgxw5niaXcmYQ==" // md5("a")

func item(name string, size any) string {
	return fmt.Sprintf(`{"name":%q,"size":%v,"generation":"17","md5Hash":%q}`, name, size, md5A)
}

func page(next string, items ...string) string {
	s := `{"items":[` + strings.Join(items, ",") + `]`
	if next != "" {
		s += `,"nextPageToken":"` + next + `"`
	}
	return s + "}"
}

func TestListRefusesLyingListings(t *testing.T) {
	for _, tc := range []struct {
		name, body, text string
		class            error
	}{
		{"escaping name", page("", item("m/../../etc/passwd", `"1"`)), "not a relative path", source.ErrProtocol},
		{"another prefix", page("", item("other/x", `"1"`)), "not a relative path", source.ErrProtocol},
		{"absolute", page("", item("m//etc/passwd", `"1"`)), "not a relative path", source.ErrProtocol},
		{"NUL", page("", `{"name":"m/a\u0000b","size":"1","generation":"1","md5Hash":"`+md5A+`"}`), "not a relative path", source.ErrProtocol},
		{"twice", page("", item("m/a", `"1"`), item("m/a", `"1"`)), "listed twice", source.ErrProtocol},
		{"negative size", page("", item("m/a", `"-1"`)), "not a non-negative integer", source.ErrProtocol},
		{"huge size", page("", item("m/a", `"9223372036854775807"`)), "size of", source.ErrProtocol},
		{"no size", page("", `{"name":"m/a","generation":"1","md5Hash":"`+md5A+`"}`), "size of", source.ErrProtocol},
		{"no generation", page("", `{"name":"m/a","size":"1","md5Hash":"`+md5A+`"}`), "no generation", source.ErrProtocol},
		{"no hash", page("", `{"name":"m/a","size":"1","generation":"1"}`), "neither md5Hash nor crc32c", source.ErrProtocol},
		{"bad md5", page("", `{"name":"m/a","size":"1","generation":"1","md5Hash":"AAAA"}`), "not a base64 MD5", source.ErrProtocol},
		{"not json", "<html>", "not the JSON expected", source.ErrProtocol},
		{"too many files", page("", item("m/1", 1), item("m/2", 1), item("m/3", 1), item("m/4", 1), item("m/5", 1), item("m/6", 1),
			item("m/7", 1), item("m/8", 1), item("m/9", 1), item("m/10", 1), item("m/11", 1)), "--max-files", source.ErrLimit},
		{"empty", page(""), "no objects", source.ErrNotFound},
		{"huge token", page(strings.Repeat("t", 5000), item("m/a", 1)), "nextPageToken", source.ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := lyingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, tc.body) })
			_, err := c.List(context.Background(), "b", "m")
			wantClass(t, err, tc.class, tc.text)
		})
	}
}

func TestListStopsEndlessPages(t *testing.T) {
	var n atomic.Int64
	c := lyingServer(t, func(w http.ResponseWriter, r *http.Request) {
		// A new token each time, so only the page limit stops it.
		io.WriteString(w, page(fmt.Sprintf("t%d", n.Add(1))))
	})
	_, err := c.List(context.Background(), "b", "m")
	wantClass(t, err, source.ErrLimit, "--max-list-pages")
	if n.Load() != 5 {
		t.Errorf("%d pages asked for, want 5", n.Load())
	}
	// The same token again goes nowhere: stopped at once.
	n.Store(0)
	c = lyingServer(t, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		io.WriteString(w, page("again", item(fmt.Sprintf("m/%d", n.Load()), 1)))
	})
	_, err = c.List(context.Background(), "b", "m")
	wantClass(t, err, source.ErrProtocol, "leads nowhere new")
}

func TestListBoundsPageBytes(t *testing.T) {
	c := lyingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"items":[`)
		chunk := strings.Repeat(item("m/a", 1)+",", 1000)
		for range maxPageBytes/len(chunk) + 2 {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	})
	_, err := c.List(context.Background(), "b", "m")
	wantClass(t, err, source.ErrLimit, "more than")
}

func TestStatusClasses(t *testing.T) {
	for _, tc := range []struct {
		code      int
		class     error
		temporary bool
	}{
		{401, source.ErrAccessDenied, false}, {403, source.ErrAccessDenied, false}, {404, source.ErrNotFound, false},
		{429, source.ErrUnreachable, true}, {500, source.ErrUnreachable, true}, {503, source.ErrUnreachable, true},
		{302, source.ErrProtocol, false}, {400, source.ErrProtocol, false},
	} {
		c := lyingServer(t, func(w http.ResponseWriter, r *http.Request) {
			if tc.code == 302 {
				w.Header().Set("Location", "http://elsewhere.example/")
			}
			w.WriteHeader(tc.code)
			fmt.Fprintf(w, `{"error":{"code":%d,"message":"told %s","errors":[{"reason":"r"}]}}`, tc.code, secretToken)
		})
		_, err := c.List(context.Background(), "b", "m")
		if !errors.Is(err, tc.class) || source.Temporary(err) != tc.temporary {
			t.Errorf("%d: %v (temporary %t), want %v temporary %t", tc.code, err, source.Temporary(err), tc.class, tc.temporary)
		}
	}
}

// The token goes to the endpoint only: a redirect is not followed.
func TestRedirectNotFollowed(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	c := lyingServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	})
	f := model.File{Path: "a", Size: 10, ETag: "17/md5:0cc175b9c0f1b6a831c399e269772661"}
	_, err := c.Open(context.Background(), "b", "m/a", f, 0, 10)
	wantClass(t, err, source.ErrProtocol, "redirect")
	if elsewhere.Load() != 0 {
		t.Fatal("the redirect was followed")
	}
}

func TestOpenRefusesLyingReads(t *testing.T) {
	f := model.File{Path: "a", Size: 10, ETag: "17/md5:0cc175b9c0f1b6a831c399e269772661"}
	for _, tc := range []struct {
		name     string
		off, end int64
		h        http.HandlerFunc
		class    error
		text     string
	}{
		{"wrong range", 2, 5, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-2/10")
			w.WriteHeader(206)
			io.WriteString(w, "abc")
		}, source.ErrProtocol, "asked for bytes 2-4"},
		{"other size", 0, 5, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-4/11")
			w.WriteHeader(206)
			io.WriteString(w, "abcde")
		}, source.ErrChanged, "11 bytes now"},
		{"other generation", 0, 5, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Goog-Generation", "18")
			w.Header().Set("Content-Range", "bytes 0-4/10")
			w.WriteHeader(206)
			io.WriteString(w, "abcde")
		}, source.ErrChanged, "generation 17, got 18"},
		{"other md5", 0, 5, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Goog-Hash", "crc32c=AAAAAA==,md5=AAAAAAAAAAAAAAAAAAAAAA==")
			w.Header().Set("Content-Range", "bytes 0-4/10")
			w.WriteHeader(206)
			io.WriteString(w, "abcde")
		}, source.ErrChanged, "md5 000000"},
		{"whole for a range", 2, 5, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "0123456789")
		}, source.ErrProtocol, "whole object"},
		{"gzip", 0, 5, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Range", "bytes 0-4/10")
			w.WriteHeader(206)
		}, source.ErrProtocol, "Content-Encoding"},
		{"transcoded", 0, 10, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Goog-Stored-Content-Encoding", "gzip")
			w.(http.Flusher).Flush()
			io.WriteString(w, "0123456789abcdef")
		}, source.ErrProtocol, "X-Goog-Stored-Content-Encoding"},
		{"gone", 0, 5, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(404) }, source.ErrChanged, "overwritten or deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := lyingServer(t, tc.h)
			r, err := c.Open(context.Background(), "b", "m/a", f, tc.off, tc.end)
			if err == nil {
				r.Close()
			}
			wantClass(t, err, tc.class, tc.text)
		})
	}
}

// A body longer than the range is cut at the range; a shorter one fails.
func TestOpenBodyLengths(t *testing.T) {
	f := model.File{Path: "a", Size: 1 << 20, ETag: "17/md5:0cc175b9c0f1b6a831c399e269772661"}
	for name, body := range map[string]string{"short": "abc", "long": strings.Repeat("x", 100)} {
		t.Run(name, func(t *testing.T) {
			c := lyingServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("generation") != "17" || r.URL.Query().Get("alt") != "media" {
					t.Errorf("read without the generation: %s", r.URL)
				}
				if r.Header.Get("Authorization") != "Bearer "+secretToken {
					t.Errorf("no token sent to the endpoint")
				}
				w.Header().Set("Content-Range", "bytes 0-9/1048576")
				w.WriteHeader(206)
				w.(http.Flusher).Flush() // chunked: no Content-Length to check first
				io.WriteString(w, body)
			})
			r, err := c.Open(context.Background(), "b", "m/a", f, 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if name == "short" && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("short body: %q, %v", got, err)
			}
			if name == "long" && (err != nil || len(got) != 10) {
				t.Fatalf("long body: %d bytes, %v", len(got), err)
			}
		})
	}
}

func TestObjectNamesAreEscaped(t *testing.T) {
	var path string
	c := lyingServer(t, func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.EscapedPath()
		w.Header().Set("Content-Range", "bytes 0-0/10")
		w.WriteHeader(206)
		io.WriteString(w, "a")
	})
	f := model.File{Path: "d/a b?#%.bin", Size: 10, ETag: "17/md5:0cc175b9c0f1b6a831c399e269772661"}
	r, err := c.Model("b", "m").Open(context.Background(), f, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if want := "/storage/v1/b/b/o/m%2Fd%2Fa%20b%3F%23%25.bin"; path != want {
		t.Fatalf("path %s, want %s", path, want)
	}
}
