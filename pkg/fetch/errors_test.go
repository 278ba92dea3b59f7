package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestBadInputGivesClassifiedErrors(t *testing.T) {
	e := newEnv(t)
	e.srv.Put(t, "models", "m/a", []byte("x"))
	bad := e.src
	bad.SecretAccessKey = "wrong-secret"
	badKey := e.src
	badKey.AccessKeyID = "nobody"
	closed := e.src
	closed.Endpoint = closedPort(t)
	f, err := fetch.New(map[string]fetch.Source{"test": e.src, "badcreds": bad, "badkey": badKey, "closed": closed})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ref      string
		class    error
		frags    []string
		requests int64 // at the proxy; -1: not checked
	}{
		{"s3://nobucket/m?source=test", fetch.ErrNotFound, []string{`bucket "nobucket" does not exist at ` + e.proxy.URL()}, 1},
		{"s3://models/missing?source=test", fetch.ErrNotFound, []string{`prefix "missing" is empty or missing`, e.proxy.URL()}, 1},
		{"s3://models/m?source=badcreds", fetch.ErrAccessDenied, []string{"access denied", `source "badcreds" (static keys)`}, 1},
		{"s3://models/m?source=badkey", fetch.ErrAccessDenied, []string{"access denied"}, 1},
		{"s3://models/m?source=closed", fetch.ErrUnreachable, []string{"cannot connect", closed.Endpoint}, 0},
		{"s3://models/m?source=nope", fetch.ErrUnknownSource, []string{`"nope"`, "configured: badcreds, badkey, closed, test"}, 0},
		{"s3://models/m?source=test&endpoint=http://elsewhere:9000", model.ErrInvalidRef, []string{"elsewhere"}, 0},
	} {
		t.Run(c.ref, func(t *testing.T) {
			before := e.proxy.Requests()
			start := time.Now()
			_, err := f.List(context.Background(), mustRef(t, c.ref), nil)
			if !errors.Is(err, c.class) {
				t.Fatalf("got %v; want %v", err, c.class)
			}
			for _, frag := range c.frags {
				if !strings.Contains(err.Error(), frag) {
					t.Errorf("%q does not mention %q", err, frag)
				}
			}
			if strings.Contains(err.Error(), "wrong-secret") || strings.Contains(err.Error(), e.srv.SecretKey) {
				t.Errorf("error shows a secret: %v", err)
			}
			if n := e.proxy.Requests() - before; c.requests >= 0 && n != c.requests {
				t.Errorf("%d requests, want %d (denied and missing are not retried)", n, c.requests)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s to fail", d)
			}
			t.Log(err)
		})
	}
}

func TestObjectGoneOrChangedAfterListing(t *testing.T) {
	e := newEnv(t)
	e.srv.Put(t, "models", "c/a.bin", s3test.RandomBytes(1, 1<<20))
	e.srv.Put(t, "models", "c/b.bin", s3test.RandomBytes(2, 1<<20))
	ref := mustRef(t, "s3://models/c?source=test")
	f := e.fetcher(t)
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		change func()
		class  error
		frag   string
	}{
		{"changed", func() { e.srv.Put(t, "models", "c/a.bin", s3test.RandomBytes(3, 1<<20)) }, fetch.ErrChanged, "changed since it was listed"},
		{"deleted", func() { e.srv.Remove(t, "models", "c/a.bin") }, fetch.ErrNotFound, "c/a.bin"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.change()
			before := e.proxy.GetCounts()["GET /models/c/a.bin bytes=0-1048575"]
			_, _, err := f.Fetch(context.Background(), ref, nil, m, e.store, nil)
			if !errors.Is(err, c.class) || !strings.Contains(err.Error(), c.frag) {
				t.Fatalf("got %v; want %v mentioning %q", err, c.class, c.frag)
			}
			if n := e.proxy.GetCounts()["GET /models/c/a.bin bytes=0-1048575"] - before; n != 1 {
				t.Fatalf("asked %d times; a changed or missing object is not retried", n)
			}
			t.Log(err)
		})
	}
}

func TestCancelledFetchReturnsContextError(t *testing.T) {
	e := newEnv(t)
	e.srv.Put(t, "models", "x/w.bin", s3test.RandomBytes(1, 16<<20))
	ref := mustRef(t, "s3://models/x?source=test")
	f := e.fetcher(t)
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy.SetDelay(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = f.Fetch(ctx, ref, nil, m, e.store, nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 900*time.Millisecond {
		t.Fatalf("got %v after %s", err, time.Since(start))
	}
}

func TestFetchRejectsAManifestOfAnotherModel(t *testing.T) {
	f, err := fetch.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := mustRef(t, "s3://models/a")
	m, err := model.NewManifest(mustRef(t, "s3://models/b"), []model.File{{Path: "x", Size: 1, ETag: "e"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Fetch(context.Background(), ref, nil, m, nil, nil); err == nil || !strings.Contains(err.Error(), "s3://models/b") {
		t.Fatalf("got %v", err)
	}
}

func TestNewValidatesOptions(t *testing.T) {
	for i, opts := range [][]fetch.Option{
		{fetch.WithPartSize(model.LeafSize + 1)},
		{fetch.WithPartSize(-model.LeafSize)},
		{fetch.WithConcurrency(0)},
		{fetch.WithMaxAttempts(0)},
	} {
		if _, err := fetch.New(nil, opts...); err == nil {
			t.Errorf("options %d accepted", i)
		}
	}
	if _, err := fetch.New(map[string]fetch.Source{"a b": {}}); err == nil {
		t.Error("bad source name accepted")
	}
	if _, err := fetch.New(map[string]fetch.Source{"s": {AccessKeyID: "k"}}); err == nil {
		t.Error("key without secret accepted")
	}
	if _, err := fetch.New(map[string]fetch.Source{"s": {Endpoint: "ftp://x"}}); err == nil {
		t.Error("bad endpoint accepted")
	}
}

func TestStalledResponseIsRetried(t *testing.T) {
	e := newEnv(t)
	data := s3test.RandomBytes(9, 2<<20)
	e.srv.Put(t, "models", "s/w.bin", data)
	ref := mustRef(t, "s3://models/s?source=test")
	f := e.fetcher(t, fetch.WithStallTimeout(200*time.Millisecond))
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The first GET answers, sends 1000 bytes and hangs, as a wedged server
	// would. (For a hang before the headers see
	// TestStallBeforeHeadersIsRetried.)
	var hung atomic.Bool
	e.proxy.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/w.bin") || !hung.CompareAndSwap(false, true) {
			return false
		}
		w.Header().Set("ETag", `"`+m.Files[0].ETag+`"`)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(data)-1, len(data)))
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[:1000])
		http.NewResponseController(w).Flush()
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		return true
	})
	start := time.Now()
	full, st, err := f.Fetch(context.Background(), ref, nil, m, e.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, e.store, full, map[string][]byte{"w.bin": data})
	if st.Retries != 1 || time.Since(start) > 3*time.Second {
		t.Fatalf("retries %d after %s", st.Retries, time.Since(start))
	}
	if n := e.proxy.GetCounts()[fmt.Sprintf("GET /models/s/w.bin bytes=1000-%d", len(data)-1)]; n != 1 {
		t.Fatalf("the retry did not continue at byte 1000: %v", e.proxy.GetCounts())
	}
}

// A server that takes the request and never answers: net/http's response
// header timeout says errors.Is(err, context.DeadlineExceeded), which the
// fetcher once took for its caller's deadline and gave up at once (found by
// TestFaultStorm).
func TestStallBeforeHeadersIsRetried(t *testing.T) {
	e := newEnv(t)
	data := s3test.RandomBytes(10, 1<<20)
	e.srv.Put(t, "models", "h/w.bin", data)
	ref := mustRef(t, "s3://models/h?source=test")
	m, err := e.fetcher(t).List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The tuned client's read deadline on the connection races the header
	// timeout (either may fire first); this one has only the header
	// timeout. Its own connections, too: on one kept from the listing
	// net/http would send the request again by itself.
	f := e.fetcher(t, fetch.WithHTTPClient(&http.Client{Transport: &http.Transport{
		ResponseHeaderTimeout: 200 * time.Millisecond, DisableKeepAlives: true}}))
	var hung atomic.Bool
	e.proxy.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/w.bin") || !hung.CompareAndSwap(false, true) {
			return false
		}
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		return true
	})
	start := time.Now()
	full, st, err := f.Fetch(context.Background(), ref, nil, m, e.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, e.store, full, map[string][]byte{"w.bin": data})
	if st.Retries != 1 || time.Since(start) > 3*time.Second {
		t.Fatalf("retries %d after %s", st.Retries, time.Since(start))
	}
}

// A file that changes between its parts fails the fetch, and its ingest
// goes with it: its bytes are of a version no later run can resume (a new
// listing gives a new ETag, so a new ingest), and kept they would hold
// disk space for good (found by TestFaultStorm).
func TestChangedObjectsIngestIsDropped(t *testing.T) {
	e := newEnv(t)
	e.srv.Put(t, "models", "g/w.bin", s3test.RandomBytes(11, model.LeafSize+1))
	ref := mustRef(t, "s3://models/g?source=test")
	f := e.fetcher(t, fetch.WithPartSize(model.LeafSize), fetch.WithConcurrency(1))
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The object is rewritten once the first part is in; the second part's
	// GET (If-Match on the old ETag) then gets 412.
	newer := s3test.RandomBytes(12, model.LeafSize+1)
	var gets atomic.Int32
	e.proxy.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/w.bin") && gets.Add(1) == 2 {
			e.srv.Client.PutObject(context.Background(), "models", "g/w.bin", bytes.NewReader(newer), int64(len(newer)),
				minio.PutObjectOptions{DisableMultipart: true})
		}
		return false
	})
	_, _, err = f.Fetch(context.Background(), ref, nil, m, e.store, nil)
	if !errors.Is(err, fetch.ErrChanged) || gets.Load() != 2 {
		t.Fatalf("got %v after %d GETs; want ErrChanged after 2", err, gets.Load())
	}
	if !dirEmpty(t, filepath.Join(e.root, "ingest")) {
		t.Fatal("the changed object's ingest was kept")
	}
	// Listed again, the new version comes whole.
	e.proxy.SetHook(nil)
	full, _ := listAndFetch(t, f, ref, e.store)
	checkTree(t, e.store, full, map[string][]byte{"w.bin": newer})
}
