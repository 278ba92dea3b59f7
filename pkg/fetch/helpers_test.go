package fetch_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// env is a real S3 server with a counting proxy in front, a store, and a
// fetcher whose source "test" goes through the proxy.
type env struct {
	srv   *s3test.Server
	proxy *s3test.Proxy
	store *cache.Store
	root  string
	src   fetch.Source
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := s3test.Start(t)
	proxy := s3test.NewCountingProxy(t, srv.Endpoint)
	root := t.TempDir()
	store, err := cache.Open(root, cache.Options{Capacity: 1 << 34})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	srv.CreateBucket(t, "models")
	return &env{srv: srv, proxy: proxy, store: store, root: root,
		src: fetch.Source{Endpoint: proxy.URL(), Region: srv.Region, PathStyle: true,
			AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}}
}

func (e *env) fetcher(t *testing.T, opts ...fetch.Option) *fetch.Fetcher {
	t.Helper()
	f, err := fetch.New(map[string]fetch.Source{"test": e.src}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// putAll uploads objects with a few connections at once.
func (e *env) putAll(t *testing.T, bucket string, objects map[string][]byte) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for k, b := range objects {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			e.srv.Put(t, bucket, k, b)
		}()
	}
	wg.Wait()
}

func mustRef(t testing.TB, s string) model.Ref {
	t.Helper()
	r, err := model.ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// listAndFetch runs both steps and returns the complete manifest.
func listAndFetch(t *testing.T, f *fetch.Fetcher, ref model.Ref, store fetch.Store) (*model.Manifest, fetch.Stats) {
	t.Helper()
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	full, st, err := f.Fetch(context.Background(), ref, nil, m, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	return full, st
}

// checkTree makes the model's tree in the store and compares every file
// with what was uploaded, and every digest with one computed from scratch.
func checkTree(t *testing.T, store *cache.Store, m *model.Manifest, want map[string][]byte) {
	t.Helper()
	if len(m.Files) != len(want) {
		t.Fatalf("manifest has %d files, want %d", len(m.Files), len(want))
	}
	mod, err := store.PutModel(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		b, ok := want[f.Path]
		if !ok {
			t.Fatalf("unexpected file %q", f.Path)
		}
		d, err := model.DigestReader(bytes.NewReader(b), int64(len(b)), nil)
		if err != nil || d != f.Digest {
			t.Fatalf("%s: digest %s, want %s (%v)", f.Path, f.Digest, d, err)
		}
		got, err := os.ReadFile(filepath.Join(mod.Path, filepath.FromSlash(f.Path)))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s differs on disk (%d bytes, want %d; %v)", f.Path, len(got), len(b), err)
		}
	}
}

// dirEmpty reports whether dir has no entries (or does not exist).
func dirEmpty(t *testing.T, dir string) bool {
	t.Helper()
	ents, err := os.ReadDir(dir)
	return err != nil || len(ents) == 0
}
