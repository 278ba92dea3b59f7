package oci_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/internal/ocitest"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
	"github.com/modelcache/modelcache/pkg/source/oci"
)

// A lying registry: whatever a test's handler answers. The client must
// refuse every lie with a classed error, never list a file outside the
// model or read bytes from the wrong offset.

func liar(t *testing.T, o oci.Options, h http.HandlerFunc) *oci.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	o.Registry, o.PlainHTTP = strings.TrimPrefix(srv.URL, "http://"), true
	c, err := oci.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type layer struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

var okDigest = ocitest.SHA256([]byte("x"))

func titled(path string) layer {
	return layer{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: okDigest, Size: 1,
		Annotations: map[string]string{oci.AnnotationTitle: path}}
}

func manifestOf(mediaType string, layers ...layer) []byte {
	b, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaType,
		"config": layer{MediaType: "application/vnd.oci.empty.v1+json", Digest: ocitest.SHA256([]byte("{}")), Size: 2},
		"layers": layers})
	return b
}

// serveManifest answers a manifest request with body, named by its digest.
func serveManifest(w http.ResponseWriter, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Docker-Content-Digest", ocitest.SHA256(body))
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.Write(body)
}

func listErr(t *testing.T, c *oci.Client) error {
	t.Helper()
	_, err := c.Model("m", "v1").List(context.Background())
	return err
}

func TestHostileManifests(t *testing.T) {
	big := layer{MediaType: "application/octet-stream", Digest: okDigest, Size: model.MaxFileSize + 1, Annotations: map[string]string{oci.AnnotationTitle: "big"}}
	sha512 := titled("w")
	sha512.Digest = "sha512:" + strings.Repeat("ab", 64)
	both := titled("a")
	both.Annotations[oci.AnnotationFilepath] = "b"
	for name, tc := range map[string]struct {
		body  []byte
		class error
		frag  string
	}{
		"traversal":       {manifestOf(oci.MediaTypeManifest, titled("../../etc/cron.d/x")), source.ErrProtocol, "not a relative path"},
		"absolute":        {manifestOf(oci.MediaTypeManifest, titled("/etc/passwd")), source.ErrProtocol, "not a relative path"},
		"dot segments":    {manifestOf(oci.MediaTypeManifest, titled("a/./b")), source.ErrProtocol, "not a relative path"},
		"directory":       {manifestOf(oci.MediaTypeManifest, titled("dir/")), source.ErrProtocol, "not a relative path"},
		"absurd size":     {manifestOf(oci.MediaTypeManifest, big), source.ErrProtocol, "a size of"},
		"negative size":   {manifestOf(oci.MediaTypeManifest, layer{Digest: okDigest, Size: -1, Annotations: map[string]string{oci.AnnotationTitle: "n"}}), source.ErrProtocol, "a size of"},
		"sha512":          {manifestOf(oci.MediaTypeManifest, sha512), source.ErrProtocol, `"sha512" is not supported (only sha256)`},
		"bad digest":      {manifestOf(oci.MediaTypeManifest, layer{Digest: "sha256:XYZ", Size: 1, Annotations: map[string]string{oci.AnnotationTitle: "w"}}), source.ErrProtocol, "64 lowercase hex"},
		"duplicate":       {manifestOf(oci.MediaTypeManifest, titled("w"), titled("x"), titled("w")), source.ErrProtocol, `"w" is the path of two layers`},
		"two paths":       {manifestOf(oci.MediaTypeManifest, both), source.ErrProtocol, "two file paths"},
		"not json":        {[]byte(`{"schemaVersion":2,`), source.ErrProtocol, "not the JSON expected"},
		"schema 1":        {[]byte(`{"schemaVersion":1,"mediaType":"` + oci.MediaTypeManifest + `"}`), source.ErrProtocol, "schemaVersion 1"},
		"artifact type":   {manifestOf("application/vnd.oci.artifact.manifest.v1+json"), source.ErrProtocol, "says it is"},
		"docker list":     {[]byte(`{"schemaVersion":2,"mediaType":"` + oci.MediaTypeDockerList + `","manifests":[]}`), source.ErrProtocol, "says it is"},
		"no titled layer": {manifestOf(oci.MediaTypeManifest, layer{Digest: okDigest, Size: 1}), source.ErrNotFound, "container image"},
	} {
		c := liar(t, oci.Options{}, func(w http.ResponseWriter, r *http.Request) { serveManifest(w, oci.MediaTypeManifest, tc.body) })
		err := listErr(t, c)
		if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.frag) {
			t.Errorf("%s: %v; want %v mentioning %q", name, err, tc.class, tc.frag)
		}
	}
}

// Each media type as the registry and the manifest both say it.
func TestManifestMediaTypes(t *testing.T) {
	for mt, want := range map[string]error{
		oci.MediaTypeManifest:       nil,
		oci.MediaTypeDockerManifest: nil,
		oci.MediaTypeIndex:          model.ErrInvalidRef,
		"application/vnd.docker.distribution.manifest.v1+prettyjws": model.ErrInvalidRef,
	} {
		body := manifestOf(mt, titled("w"))
		c := liar(t, oci.Options{}, func(w http.ResponseWriter, r *http.Request) { serveManifest(w, mt, body) })
		if err := listErr(t, c); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", mt, err, want)
		}
	}
}

func TestHugeManifest(t *testing.T) {
	var layers []layer
	for i := range 40_000 {
		layers = append(layers, titled(fmt.Sprintf("file-%06d.bin", i)))
	}
	body := manifestOf(oci.MediaTypeManifest, layers...)
	if len(body) <= oci.MaxManifestBytes {
		t.Fatalf("the manifest is only %d bytes", len(body))
	}
	for _, withDigest := range []bool{true, false} {
		c := liar(t, oci.Options{}, func(w http.ResponseWriter, r *http.Request) {
			serveManifest(w, oci.MediaTypeManifest, body)
			if !withDigest {
				w.Header().Del("Docker-Content-Digest")
			}
		})
		if err := listErr(t, c); !errors.Is(err, source.ErrLimit) {
			t.Errorf("a manifest of %d bytes (digest header %t): %v, want ErrLimit", len(body), withDigest, err)
		}
	}
	// And the file limit.
	small := manifestOf(oci.MediaTypeManifest, titled("a"), titled("b"), titled("c"))
	c := liar(t, oci.Options{MaxFiles: 2}, func(w http.ResponseWriter, r *http.Request) { serveManifest(w, oci.MediaTypeManifest, small) })
	if err := listErr(t, c); !errors.Is(err, source.ErrLimit) {
		t.Errorf("3 files with MaxFiles 2: %v", err)
	}
}

// The registry names a manifest by a digest its bytes do not have.
func TestManifestDigestLies(t *testing.T) {
	body := manifestOf(oci.MediaTypeManifest, titled("w"))
	other := ocitest.SHA256([]byte("another manifest"))
	c := liar(t, oci.Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", oci.MediaTypeManifest)
		w.Header().Set("Docker-Content-Digest", other)
		w.Write(body)
	})
	if err := listErr(t, c); !errors.Is(err, source.ErrProtocol) {
		t.Errorf("tag whose digest header lies: %v", err)
	}
	// Asked by digest, answered with another manifest (and no header).
	c = liar(t, oci.Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", oci.MediaTypeManifest)
		w.Write(body)
	})
	if _, err := c.Model("m", other).List(context.Background()); !errors.Is(err, source.ErrProtocol) {
		t.Errorf("another manifest for a digest: %v", err)
	}
}

func TestStatuses(t *testing.T) {
	for status, want := range map[int]error{401: source.ErrAccessDenied, 403: source.ErrAccessDenied, 404: source.ErrNotFound,
		429: source.ErrUnreachable, 503: source.ErrUnreachable, 418: source.ErrProtocol} {
		c := liar(t, oci.Options{}, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, `{"errors":[{"code":"DENIED","message":"no\x1b[31m way"}]}`)
		})
		err := listErr(t, c)
		if !errors.Is(err, want) || source.Temporary(err) != (want == source.ErrUnreachable) || strings.Contains(err.Error(), "\x1b") {
			t.Errorf("%d: %v (temporary %t), want %v", status, err, source.Temporary(err), want)
		}
	}
}

// blobServer answers the manifest of one 100-byte file and its blob with h.
func blobServer(t *testing.T, h func(w http.ResponseWriter, r *http.Request, data []byte)) (*oci.Model, model.File, []byte) {
	data := []byte(strings.Repeat("0123456789", 10))
	l := layer{MediaType: "application/octet-stream", Digest: ocitest.SHA256(data), Size: 100, Annotations: map[string]string{oci.AnnotationTitle: "w"}}
	body := manifestOf(oci.MediaTypeManifest, l)
	c := liar(t, oci.Options{}, func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			serveManifest(w, oci.MediaTypeManifest, body)
			return
		}
		h(w, r, data)
	})
	m := c.Model("m", "v1")
	ls, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m, ls.Files[0], data
}

func TestHostileBlobs(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		h        func(w http.ResponseWriter, r *http.Request, data []byte)
		off, end int64
		frag     string // "" for a read that succeeds
	}{
		"range ignored mid-file": {func(w http.ResponseWriter, r *http.Request, d []byte) { w.Write(d) }, 10, 20, "ignored the range"},
		"range ignored, whole":   {func(w http.ResponseWriter, r *http.Request, d []byte) { w.Write(d) }, 0, 100, ""},
		"shifted range": {func(w http.ResponseWriter, r *http.Request, d []byte) {
			w.Header().Set("Content-Range", "bytes 11-20/100")
			w.WriteHeader(206)
			w.Write(d[11:21])
		}, 10, 20, "asked for bytes 10-19, got 11-20"},
		"other size": {func(w http.ResponseWriter, r *http.Request, d []byte) {
			w.Header().Set("Content-Range", "bytes 10-19/1000")
			w.WriteHeader(206)
			w.Write(d[10:20])
		}, 10, 20, "the blob is 1000 bytes"},
		"no content range": {func(w http.ResponseWriter, r *http.Request, d []byte) { w.WriteHeader(206); w.Write(d[10:20]) }, 10, 20, "206 with Content-Range"},
		"other blob": {func(w http.ResponseWriter, r *http.Request, d []byte) {
			w.Header().Set("Docker-Content-Digest", okDigest)
			w.Write(d)
		}, 0, 100, "serves blob"},
		"unknown total": {func(w http.ResponseWriter, r *http.Request, d []byte) {
			w.Header().Set("Content-Range", "bytes 10-19/*")
			w.WriteHeader(206)
			w.Write(d[10:20])
		}, 10, 20, ""},
	} {
		m, f, data := blobServer(t, tc.h)
		r, err := m.Open(ctx, f, tc.off, tc.end)
		if tc.frag == "" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			b, err := io.ReadAll(r)
			r.Close()
			if err != nil || string(b) != string(data[tc.off:tc.end]) {
				t.Errorf("%s: read %q, %v", name, b, err)
			}
			continue
		}
		if !errors.Is(err, source.ErrProtocol) || !strings.Contains(err.Error(), tc.frag) {
			t.Errorf("%s: %v; want ErrProtocol mentioning %q", name, err, tc.frag)
		}
	}
	// A body cut short is an error, never a short file.
	m, f, _ := blobServer(t, func(w http.ResponseWriter, r *http.Request, d []byte) {
		w.Header().Set("Content-Range", "bytes 0-49/100")
		w.Header().Set("Content-Length", "50")
		w.WriteHeader(206)
		w.Write(d[:20])
	})
	r, err := m.Open(ctx, f, 0, 50)
	if err == nil {
		_, err = io.ReadAll(r)
		r.Close()
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short body: %v, want io.ErrUnexpectedEOF", err)
	}
	// The file's ETag must be its digest: Open reads blobs by it.
	f.ETag = "../../other"
	if _, err := m.Open(ctx, f, 0, 1); err == nil {
		t.Error("opened a file whose ETag is no digest")
	}
}
