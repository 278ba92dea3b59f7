package oci_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/internal/ocitest"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
	"github.com/modelcache/modelcache/pkg/source/oci"
)

// modelFiles is a model as oras push makes it: nested paths, an empty
// file, a ModelPack raw layer, and one file of more than one 8 MiB leaf so
// ranges matter; plus a layer without a title, which is no file.
func modelFiles() []ocitest.File {
	big := make([]byte, model.LeafSize+123457)
	for i := range big {
		big[i] = byte(i*7 + i>>13)
	}
	return []ocitest.File{
		{Path: "config.json", Data: []byte(`{"architectures":["LlamaForCausalLM"]}`)},
		{Path: "model.safetensors", Data: big},
		{Path: "tokenizer/tokenizer.json", Data: []byte(`{"version":"1.0"}`)},
		{Path: "empty.txt", Data: nil},
		{Path: "ignored", Data: []byte("a layer without a title"), Annotations: map[string]string{oci.AnnotationTitle: ""}},
		{Path: "original/params.json", Data: []byte(`{"dim":4096}`), MediaType: "application/vnd.cncf.model.weight.config.v1.raw",
			Annotations: map[string]string{oci.AnnotationTitle: "", oci.AnnotationFilepath: "original/params.json"}},
	}
}

func client(t *testing.T, reg *ocitest.Registry, o oci.Options) *oci.Client {
	t.Helper()
	o.Registry, o.PlainHTTP = reg.Host, true
	c, err := oci.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func read(t *testing.T, src source.Source, f model.File, off, end int64) []byte {
	t.Helper()
	r, err := src.Open(context.Background(), f, off, end)
	if err != nil {
		t.Fatalf("open %s [%d, %d): %v", f.Path, off, end, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s [%d, %d): %v", f.Path, off, end, err)
	}
	return b
}

func byPath(files []model.File) map[string]model.File {
	m := map[string]model.File{}
	for _, f := range files {
		m[f.Path] = f
	}
	return m
}

func TestListAndReadByTagAndDigest(t *testing.T) {
	reg := ocitest.Start(t)
	files := modelFiles()
	digest := reg.Push(t, "org/models/llama", "v1", files)
	c := client(t, reg, oci.Options{})
	ctx := context.Background()

	l, err := c.Model("org/models/llama", "v1").List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l.Revision != digest {
		t.Errorf("revision %s, want the manifest digest %s", l.Revision, digest)
	}
	got := byPath(l.Files)
	if len(got) != 5 {
		t.Errorf("listed %v, want 5 files (the untitled layer is none)", l.Files)
	}
	m := c.Model("org/models/llama", "v1")
	for _, f := range files {
		if f.Path == "ignored" {
			continue
		}
		lf, ok := got[f.Path]
		sum := sha256.Sum256(f.Data)
		if !ok || lf.Size != int64(len(f.Data)) || lf.Digest != model.SHA256(sum[:]) || lf.ETag != lf.Digest.Hex() {
			t.Errorf("%s listed as %+v", f.Path, lf)
			continue
		}
		if b := read(t, m, lf, 0, lf.Size); !bytes.Equal(b, f.Data) {
			t.Errorf("%s: read %d bytes, not the file's", f.Path, len(b))
		}
	}
	// A range in the middle of the big blob, across the 8 MiB leaf edge.
	big := got["model.safetensors"]
	off, end := int64(model.LeafSize-1000), int64(model.LeafSize+5000)
	if b := read(t, m, big, off, end); !bytes.Equal(b, files[1].Data[off:end]) {
		t.Error("the middle range has the wrong bytes")
	}
	if b := read(t, m, big, end, end); len(b) != 0 {
		t.Error("an empty range read bytes")
	}
	if _, err := m.Open(ctx, big, 10, big.Size+1); err == nil {
		t.Error("a range past the end was read")
	}
	var ranged bool
	for _, q := range reg.Requests() {
		ranged = ranged || q.Range == "bytes=8387608-8393607"
	}
	if !ranged {
		t.Error("no ranged GET for the middle range")
	}

	// By digest: the same manifest, the same files.
	l2, err := c.Model("org/models/llama", digest).List(ctx)
	if err != nil || l2.Revision != digest || len(l2.Files) != len(l.Files) {
		t.Fatalf("by digest: %v %+v", err, l2)
	}
	// "" is latest.
	reg.Push(t, "org/models/llama", "latest", files[:1])
	if l3, err := c.Model("org/models/llama", "").List(ctx); err != nil || len(l3.Files) != 1 {
		t.Errorf("latest: %v %+v", err, l3)
	}
}

// A tag that moves names another manifest; the old digest still lists and
// reads the old files.
func TestTagMoves(t *testing.T) {
	reg := ocitest.Start(t)
	c := client(t, reg, oci.Options{})
	ctx := context.Background()
	old := reg.Push(t, "m", "prod", []ocitest.File{{Path: "w.bin", Data: []byte("old weights")}})
	next := reg.Push(t, "m", "prod", []ocitest.File{{Path: "w.bin", Data: []byte("new weights!")}, {Path: "extra", Data: []byte("x")}})
	l, err := c.Model("m", "prod").List(ctx)
	if err != nil || l.Revision != next || len(l.Files) != 2 {
		t.Fatalf("moved tag: %v %+v", err, l)
	}
	m := c.Model("m", old)
	l, err = m.List(ctx)
	if err != nil || l.Revision != old || len(l.Files) != 1 {
		t.Fatalf("old digest: %v %+v", err, l)
	}
	if b := read(t, m, l.Files[0], 0, l.Files[0].Size); string(b) != "old weights" {
		t.Errorf("old digest reads %q", b)
	}
}

func TestNotFound(t *testing.T) {
	reg := ocitest.Start(t)
	reg.Push(t, "m", "v1", []ocitest.File{{Path: "a", Data: []byte("a")}})
	c := client(t, reg, oci.Options{})
	ctx := context.Background()
	for _, at := range []string{"v2", "sha256:" + strings.Repeat("0", 64)} {
		if _, err := c.Model("m", at).List(ctx); !errors.Is(err, source.ErrNotFound) {
			t.Errorf("missing %s: %v, want ErrNotFound", at, err)
		}
	}
	if _, err := c.Model("nope/nothing", "v1").List(ctx); !errors.Is(err, source.ErrNotFound) || !strings.Contains(err.Error(), "oci://"+reg.Host+"/nope/nothing:v1") {
		t.Errorf("missing repo: %v, want ErrNotFound naming the ref", err)
	}
	f := model.File{Path: "a", Size: 1, ETag: strings.Repeat("1", 64)}
	if _, err := c.Model("m", "v1").Open(ctx, f, 0, 1); !errors.Is(err, source.ErrNotFound) {
		t.Errorf("missing blob: %v, want ErrNotFound", err)
	}
	// A container image (no titled layer) is not a model.
	reg.Push(t, "img", "v1", []ocitest.File{{Path: "x", Data: []byte("rootfs"), Annotations: map[string]string{oci.AnnotationTitle: ""}}})
	if _, err := c.Model("img", "v1").List(ctx); !errors.Is(err, source.ErrNotFound) || !strings.Contains(err.Error(), "container image") {
		t.Errorf("an image without titled layers: %v", err)
	}
}

// An index names manifests for platforms: the error shows them by digest.
func TestIndexRefused(t *testing.T) {
	reg := ocitest.Start(t)
	d := reg.Push(t, "m", "amd64", []ocitest.File{{Path: "a", Data: []byte("a")}})
	reg.PushRaw(t, "m", "multi", oci.MediaTypeIndex, ocitest.Index(map[string]string{d: "linux/amd64"}))
	_, err := client(t, reg, oci.Options{}).Model("m", "multi").List(context.Background())
	if !errors.Is(err, model.ErrInvalidRef) || !strings.Contains(err.Error(), "pick a platform-specific manifest by digest") ||
		!strings.Contains(err.Error(), "oci://"+reg.Host+"/m@"+d+" (linux/amd64)") {
		t.Errorf("index: %v", err)
	}
}

// Tarred or compressed layers are not the files they name; they are
// refused until they can be unpacked safely.
func TestArchiveLayersRefused(t *testing.T) {
	reg := ocitest.Start(t)
	c := client(t, reg, oci.Options{})
	for i, f := range []ocitest.File{
		{Path: "weights", Data: []byte("tar"), MediaType: "application/vnd.cncf.model.weight.v1.tar"},
		{Path: "weights", Data: []byte("tgz"), MediaType: "application/vnd.kitops.modelkit.model.v1.tar+gzip"},
		{Path: "dir", Data: []byte("dir"), MediaType: "application/vnd.oci.image.layer.v1.tar+gzip"},
		{Path: "dir", Data: []byte("dir"), Annotations: map[string]string{"io.deis.oras.content.unpack": "true"}},
	} {
		tag := "t" + string(rune('0'+i))
		reg.Push(t, "m", tag, []ocitest.File{f})
		_, err := c.Model("m", tag).List(context.Background())
		if !errors.Is(err, model.ErrInvalidRef) || !strings.Contains(err.Error(), "archive layers are not supported yet") {
			t.Errorf("%s %v: %v", f.MediaType, f.Annotations, err)
		}
	}
}

// A blob whose bytes are not its digest: the listing carries the digest
// the fetcher checks the bytes against.
func TestCorruptBlobListsItsDigest(t *testing.T) {
	reg := ocitest.Start(t)
	data := []byte("the real weights")
	reg.Push(t, "m", "v1", []ocitest.File{{Path: "w", Data: data}})
	reg.Corrupt(ocitest.SHA256(data), []byte("the evil weights"))
	m := client(t, reg, oci.Options{}).Model("m", "v1")
	l, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if string(l.Files[0].Digest) != ocitest.SHA256(data) {
		t.Fatalf("listed digest %s", l.Files[0].Digest)
	}
	b := read(t, m, l.Files[0], 0, l.Files[0].Size)
	if sum := sha256.Sum256(b); model.SHA256(sum[:]) == l.Files[0].Digest {
		t.Fatal("the corrupt bytes have the digest?")
	}
}

// Basic auth: no credentials or wrong ones are ErrAccessDenied, and no
// error shows the password; blobs redirected to storage get no
// credentials.
func TestBasicAuthAndRedirect(t *testing.T) {
	reg := ocitest.Start(t, ocitest.WithBasicAuth("alice", "s3cret-pw"), ocitest.WithRedirect())
	files := modelFiles()
	reg.Push(t, "private/llm", "v1", files)
	ctx := context.Background()
	for name, o := range map[string]oci.Options{"anonymous": {}, "wrong": {Username: "alice", Password: "wr0ng-pw"}} {
		_, err := client(t, reg, o).Model("private/llm", "v1").List(ctx)
		if !errors.Is(err, source.ErrAccessDenied) || strings.Contains(err.Error(), "pw") {
			t.Errorf("%s: %v; want ErrAccessDenied without the password", name, err)
		}
	}
	m := client(t, reg, oci.Options{Username: "alice", Password: "s3cret-pw"}).Model("private/llm", "v1")
	l, err := m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	big := byPath(l.Files)["model.safetensors"]
	if b := read(t, m, big, 5, 1<<20); !bytes.Equal(b, files[1].Data[5:1<<20]) {
		t.Error("redirected ranged read: wrong bytes")
	}
	var stored bool
	for _, q := range reg.Requests() {
		if q.Server == "storage" {
			stored = true
			if q.Authorization != "" {
				t.Errorf("the credentials reached the storage server: %s %s", q.Method, q.Path)
			}
		}
	}
	if !stored {
		t.Error("no blob was read from the storage server")
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(nil)
	host := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	c, err := oci.New(oci.Options{Registry: host, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Model("m", "v1").List(context.Background())
	if !errors.Is(err, source.ErrUnreachable) || !source.Temporary(err) {
		t.Errorf("closed port: %v, want temporary ErrUnreachable", err)
	}
}

func TestNewChecksOptions(t *testing.T) {
	for name, o := range map[string]oci.Options{
		"empty":      {},
		"path":       {Registry: "reg/x"},
		"userinfo":   {Registry: "u:p@reg"},
		"half creds": {Registry: "reg", Username: "u"},
		"newline":    {Registry: "reg", Username: "u", Password: "p\n"},
	} {
		if _, err := oci.New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
