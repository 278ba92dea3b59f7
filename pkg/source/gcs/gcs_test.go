package gcs_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/internal/gcstest"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
	"github.com/modelcache/modelcache/pkg/source/gcs"
)

// The honest protocol, against a real GCS JSON API server
// (fake-gcs-server); lying servers are in hostile_test.go.

func client(t *testing.T, endpoint string, o gcs.Options) *gcs.Client {
	t.Helper()
	o.Endpoint = endpoint
	c, err := gcs.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func read(t *testing.T, m *gcs.Model, f model.File, off, end int64) ([]byte, error) {
	t.Helper()
	r, err := m.Open(context.Background(), f, off, end)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func TestListAndReadPaginated(t *testing.T) {
	s := gcstest.Start(t)
	s.CreateBucket(t, "models")
	want := map[string][]byte{}
	for i := range 7 {
		name := fmt.Sprintf("sub/w%d.bin", i)
		want[name] = bytes.Repeat([]byte{byte('a' + i)}, 1000+i)
		s.Put(t, "models", "llama/"+name, want[name])
	}
	want["config.json"] = []byte(`{"a":1}`)
	s.Put(t, "models", "llama/config.json", want["config.json"])
	s.Put(t, "models", "llama/dir/", nil)            // a folder placeholder: skipped
	s.Put(t, "models", "llama-other/x", []byte("x")) // another prefix that shares the start
	s.Put(t, "models", "other/y", []byte("y"))

	m := client(t, s.Endpoint, gcs.Options{PageSize: 3}).Model("models", "llama")
	l, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l.Revision != "" || len(l.Files) != len(want) {
		t.Fatalf("listing %+v, want %d files", l, len(want))
	}
	for _, f := range l.Files {
		w, ok := want[f.Path]
		if !ok || f.Size != int64(len(w)) || !strings.Contains(f.ETag, "/md5:") {
			t.Fatalf("listed %+v", f)
		}
		got, err := read(t, m, f, 0, f.Size)
		if err != nil || !bytes.Equal(got, w) {
			t.Fatalf("%s: read %q, %v", f.Path, got, err)
		}
		got, err = read(t, m, f, 2, f.Size-1)
		if err != nil || !bytes.Equal(got, w[2:f.Size-1]) {
			t.Fatalf("%s: ranged read %q, %v", f.Path, got, err)
		}
	}

	// Three pages of three at most: a limit of two fails cleanly.
	_, err = client(t, s.Endpoint, gcs.Options{PageSize: 3, MaxPages: 2}).Model("models", "llama").List(context.Background())
	if !errors.Is(err, source.ErrLimit) || !strings.Contains(err.Error(), "--max-list-pages") {
		t.Fatalf("over the page limit: %v", err)
	}
	_, err = client(t, s.Endpoint, gcs.Options{MaxFiles: 5}).Model("models", "llama").List(context.Background())
	if !errors.Is(err, source.ErrLimit) || !strings.Contains(err.Error(), "--max-files") {
		t.Fatalf("over the file limit: %v", err)
	}
}

func TestOverwrittenObjectIsChanged(t *testing.T) {
	s := gcstest.Start(t)
	s.CreateBucket(t, "models")
	s.Put(t, "models", "m/w.bin", bytes.Repeat([]byte("a"), 4096))
	m := client(t, s.Endpoint, gcs.Options{}).Model("models", "m")
	l, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f := l.Files[0]
	if _, err := read(t, m, f, 0, 10); err != nil {
		t.Fatal(err)
	}
	// Same size, new bytes: only the generation tells them apart.
	s.Put(t, "models", "m/w.bin", bytes.Repeat([]byte("b"), 4096))
	got, err := read(t, m, f, 10, 20)
	if !errors.Is(err, source.ErrChanged) {
		t.Fatalf("read of an overwritten object: %q, %v; want ErrChanged", got, err)
	}
	if err := m.Stat(context.Background(), f); !errors.Is(err, source.ErrChanged) {
		t.Fatalf("stat of an overwritten object: %v; want ErrChanged", err)
	}
	s.Delete(t, "models", "m/w.bin")
	if _, err := read(t, m, f, 0, 1); !errors.Is(err, source.ErrChanged) {
		t.Fatalf("read of a deleted object: %v; want ErrChanged", err)
	}
}

// An object stored gzip-encoded is served decompressed: its bytes are not
// the ones listed, so it is refused rather than cached.
func TestGzipStoredObjectRefused(t *testing.T) {
	s := gcstest.Start(t)
	s.CreateBucket(t, "models")
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(bytes.Repeat([]byte("config "), 100))
	zw.Close()
	s.PutEncoded(t, "models", "m/config.json", z.Bytes(), "gzip")
	m := client(t, s.Endpoint, gcs.Options{}).Model("models", "m")
	l, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f := l.Files[0]
	if _, err := read(t, m, f, 0, f.Size); !errors.Is(err, source.ErrProtocol) || !strings.Contains(err.Error(), "gzip") {
		t.Fatalf("read of a gzip-stored object: %v; want ErrProtocol naming gzip", err)
	}
}

func TestNotFound(t *testing.T) {
	s := gcstest.Start(t)
	s.CreateBucket(t, "models")
	s.Put(t, "models", "m/a", []byte("a"))
	c := client(t, s.Endpoint, gcs.Options{})
	for _, m := range []*gcs.Model{c.Model("nosuchbucket", "m"), c.Model("models", "nothing-here")} {
		if _, err := m.List(context.Background()); !errors.Is(err, source.ErrNotFound) {
			t.Errorf("list: %v; want ErrNotFound", err)
		}
	}
}

// The guard answers as IAM would: who may read is decided by the service
// account whose key signed the token.
func TestAccessDenied(t *testing.T) {
	s := gcstest.Start(t)
	s.CreateBucket(t, "models")
	s.Put(t, "models", "m/a", []byte("a"))
	g := gcstest.NewGuard(t, s.Endpoint)
	g.Allow("models", "alice@test.iam.gserviceaccount.com")

	if _, err := client(t, g.URL, gcs.Options{}).Model("models", "m").List(context.Background()); !errors.Is(err, source.ErrAccessDenied) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("anonymous: %v; want ErrAccessDenied (401)", err)
	}
	eve, err := gcs.ServiceAccountTokenSource(gcstest.ServiceAccountKey(t, "eve@test.iam.gserviceaccount.com"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = client(t, g.URL, gcs.Options{TokenSource: eve}).Model("models", "m").List(context.Background())
	if !errors.Is(err, source.ErrAccessDenied) || !strings.Contains(err.Error(), "403") || source.Temporary(err) {
		t.Fatalf("eve: %v; want ErrAccessDenied (403), not temporary", err)
	}
	alice, err := gcs.ServiceAccountTokenSource(gcstest.ServiceAccountKey(t, "alice@test.iam.gserviceaccount.com"))
	if err != nil {
		t.Fatal(err)
	}
	m := client(t, g.URL, gcs.Options{TokenSource: alice}).Model("models", "m")
	l, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := read(t, m, l.Files[0], 0, 1); err != nil || string(got) != "a" {
		t.Fatalf("alice reads %q, %v", got, err)
	}
}

func TestServiceAccountKeyChecks(t *testing.T) {
	for name, key := range map[string]string{
		"not json":         "nope",
		"external account": `{"type":"external_account","credential_source":{"file":"/etc/shadow"}}`,
		"authorized user":  `{"type":"authorized_user","refresh_token":"x"}`,
		"no email":         `{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"}`,
		"bad pem":          `{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXZhbHVl\n-----END PRIVATE KEY-----\n"}`,
	} {
		_, err := gcs.ServiceAccountTokenSource([]byte(key))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(err.Error(), "shadow") || strings.Contains(err.Error(), "refresh") {
			t.Errorf("%s: the error echoes the key: %v", name, err)
		}
	}
}
