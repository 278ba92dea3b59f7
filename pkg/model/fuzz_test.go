package model_test

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/model"
)

var userinfo = regexp.MustCompile(`://([^/?&@]*)@`)

// Refs come from pod specs, annotations and StorageClasses: whatever a user
// typed. A ref that parses must print back to itself, and its prefix must
// be a clean relative path.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"s3://models/llama-3-8b", "s3://b/p?source=minio&revision=0123456789abcdef",
		"s3://b/a/b/c?endpoint=http://127.0.0.1:9000&region=eu-west-1", "s3://bkt", "s3://b/../x", "s3:/x", "hf://org/m@refs/pr/1?include=*.json", "hf://o/m@v1?exclude=original/&source=hub",
		"s3://b/p?endpoint=http://user:pass@host", "s3://b/p?%zz", "s3://b//p", "s3://b/p?source=a&source=b",
		"oci://ghcr.io/org/m:v1", "oci://Reg:5000/a/b__c@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"oci://reg/m?source=corp&include=*.json", "oci://u:p@reg/m:t", "oci://reg/m:t@sha256:00", "oci://reg/m?region=x",
		"gs://models/llama?source=gcs&exclude=*.bin", "gs://a.b_c-d/p%20q?endpoint=http://127.0.0.1:4443", "gs://goog/x", "gs://b/../x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := model.ParseRef(s)
		if err != nil {
			// Credentials pasted into an endpoint URL never reach an error.
			for _, m := range userinfo.FindAllStringSubmatch(s, -1) {
				if len(m[1]) >= 4 && strings.Contains(err.Error(), m[1]+"@") {
					t.Fatalf("error echoes URL credentials %q: %v", m[1], err)
				}
			}
			return
		}
		again, err := model.ParseRef(r.String())
		if err != nil || again != r {
			t.Fatalf("%q parsed to %+v, whose string %q parses to %+v (%v)", s, r, r.String(), again, err)
		}
		if r.Prefix != "" {
			if strings.HasPrefix(r.Prefix, "/") || strings.HasSuffix(r.Prefix, "/") || filepath.Clean(r.Prefix) != r.Prefix || r.Prefix == ".." || strings.HasPrefix(r.Prefix, "../") {
				t.Fatalf("%q: prefix %q is not a clean relative path", s, r.Prefix)
			}
		}
		if r.ID() == "" || strings.ContainsAny(r.ID(), "/\x00") {
			t.Fatalf("%q: id %q cannot name a directory", s, r.ID())
		}
	})
}

// Object keys come from a bucket listing, which whoever can write the bucket
// controls. A key that is accepted lands inside the model directory.
func FuzzRelPath(f *testing.F) {
	for _, k := range [][2]string{{"m", "m/a.bin"}, {"m", "m/a/../../etc/x"}, {"m", "m//x"}, {"m", "m/"},
		{"m", "m/dir/"}, {"", "/abs"}, {"m", "m/\x00"}, {"m", "m/./x"}, {"m", "mx/y"}, {"m", "m/a b/ü.json"}} {
		f.Add(k[0], k[1])
	}
	f.Fuzz(func(t *testing.T, prefix, key string) {
		rel, skip, err := model.RelPath(prefix, key)
		if err != nil || skip {
			return
		}
		root := "/cache/models/id/rev"
		p := filepath.Join(root, filepath.FromSlash(rel))
		if !strings.HasPrefix(p, root+"/") || filepath.Clean(rel) != rel || strings.ContainsRune(rel, 0) {
			t.Fatalf("prefix %q key %q: accepted as %q, which lands at %q", prefix, key, rel, p)
		}
	})
}

// Manifests are read back from disk after a crash: a torn or hostile file
// must be refused, never trusted; one that decodes is valid and stable.
func FuzzDecodeManifest(f *testing.F) {
	f.Add([]byte(`{"ref":"s3://b/m","files":[{"path":"a.bin","size":3,"etag":"e","digest":"xxh64t:0123456789abcdef"}]}`))
	f.Add([]byte(`{"ref":"s3://b/m","files":[{"path":"../x","size":1}]}`))
	f.Add([]byte(`{"ref":"s3://b/m","files":[{"path":"a","size":-1}]}`))
	f.Add([]byte(`{"ref":"s3://b/m","files":[{"path":"a","size":1},{"path":"a","size":1}]}`))
	f.Add([]byte(`{"ref":`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := model.DecodeManifest(b)
		if err != nil {
			return
		}
		for _, fl := range m.Files {
			if _, _, err := model.RelPath("", fl.Path); err != nil || fl.Size < 0 {
				t.Fatalf("decoded manifest holds file %q of size %d: %v", fl.Path, fl.Size, err)
			}
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := model.DecodeManifest(enc)
		if err != nil {
			t.Fatalf("re-encoded manifest does not decode: %v", err)
		}
		enc2, _ := m2.Encode()
		if !bytes.Equal(enc, enc2) || m.Revision() != m2.Revision() {
			t.Fatal("manifest changed through encode/decode")
		}
	})
}

// Patterns come from annotations and volume attributes: none may panic the
// agent, and a compiled filter must answer for any path.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{"*.safetensors", "original/", "[!a]*", "[]]", "a[b", "[z-a]", `\`, "[^x]", "**/*.json"} {
		f.Add(s, "original/model-00001-of-00002.safetensors")
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		flt, err := model.NewFilter([]string{pattern}, []string{pattern})
		if err != nil {
			return
		}
		if flt.Keep(path) {
			t.Fatalf("%q both includes and excludes %q, and exclude must win", pattern, path)
		}
		if strings.HasSuffix(pattern, "/") && !strings.ContainsAny(pattern, "*?[") {
			inc, _ := model.NewFilter([]string{pattern}, nil)
			if !inc.Keep(pattern + "x") {
				t.Fatalf("folder pattern %q does not keep %q", pattern, pattern+"x")
			}
		}
	})
}
