package model_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/model"
)

func TestParseRef(t *testing.T) {
	good := map[string]model.Ref{
		"s3://models/llama-3-8b": {Bucket: "models", Prefix: "llama-3-8b"},
		"s3://models/a/b/":       {Bucket: "models", Prefix: "a/b"},
		"s3://models":            {Bucket: "models"},
		"s3://m.x_y/p%20q?source=local&revision=0123456789abcdef":    {Bucket: "m.x_y", Prefix: "p q", Source: "local", Revision: "0123456789abcdef"},
		"s3://bkt/m?endpoint=http://127.0.0.1:7070&region=us-east-1": {Bucket: "bkt", Prefix: "m", Endpoint: "http://127.0.0.1:7070", Region: "us-east-1"},
		"hf://meta-llama/Llama-3.1-8B-Instruct":                      {Scheme: model.SchemeHF, Repo: "meta-llama/Llama-3.1-8B-Instruct"},
		"hf://org/m@refs/pr/1?source=hub":                            {Scheme: model.SchemeHF, Repo: "org/m", At: "refs/pr/1", Source: "hub"},
		"hf://org/m@0123456789abcdef0123456789abcdef01234567?endpoint=http://mirror:8080": {Scheme: model.SchemeHF, Repo: "org/m",
			At: "0123456789abcdef0123456789abcdef01234567", Endpoint: "http://mirror:8080"},
		"hf://org/m@v1.0?include=*.safetensors,+*.json&exclude=original/": {Scheme: model.SchemeHF, Repo: "org/m", At: "v1.0",
			Include: "*.safetensors,*.json", Exclude: "original/"},
		"s3://bkt/m?exclude=*.bin":   {Bucket: "bkt", Prefix: "m", Exclude: "*.bin"},
		"gs://models/llama-3-8b":     {Scheme: model.SchemeGCS, Bucket: "models", Prefix: "llama-3-8b"},
		"gs://my_bucket.example.com": {Scheme: model.SchemeGCS, Bucket: "my_bucket.example.com"},
		"gs://b-1/a/b%20c/?source=gcs&endpoint=http://127.0.0.1:4443&include=*.json": {Scheme: model.SchemeGCS, Bucket: "b-1",
			Prefix: "a/b c", Source: "gcs", Endpoint: "http://127.0.0.1:4443", Include: "*.json"},
		"oci://ghcr.io/org/models/llama:v1": {Scheme: model.SchemeOCI, Registry: "ghcr.io", Repo: "org/models/llama", At: "v1"},
		"oci://Registry.Local:5000/m":       {Scheme: model.SchemeOCI, Registry: "registry.local:5000", Repo: "m"},
		"oci://127.0.0.1:5000/a/b__c-d.e@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": {Scheme: model.SchemeOCI, Registry: "127.0.0.1:5000", Repo: "a/b__c-d.e", At: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		"oci://reg/m:V1.0_rc-1?source=corp&include=*.safetensors&revision=0123456789abcdef": {Scheme: model.SchemeOCI, Registry: "reg",
			Repo: "m", At: "V1.0_rc-1", Source: "corp", Include: "*.safetensors", Revision: "0123456789abcdef"},
	}
	for s, want := range good {
		got, err := model.ParseRef(s)
		if err != nil || got != want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", s, got, err, want)
			continue
		}
		again, err := model.ParseRef(got.String())
		if err != nil || again != got {
			t.Errorf("round trip of %q via %q: %+v %v", s, got.String(), again, err)
		}
	}
	bad := map[string]string{
		"":                                      "empty",
		"http://bkt/m":                          "s3://",
		"s3://../etc":                           "bucket",
		"s3://bkt/a/../../etc":                  `".." segment`,
		"s3://bkt//abs":                         "absolute",
		"s3://bkt/m?x=1":                        "unknown option",
		"s3://bkt/m?revision=zz":                "revision",
		"s3://bkt/m?endpoint=ftp://h":           "endpoint",
		"s3://bkt/m?endpoint=http://://":        "endpoint",
		"s3://bkt/m?endpoint=http://h/p":        "without credentials or path",
		"s3://bkt/m?endpoint=http://u:secret@h": "REDACTED",
		"s3://u:secret@bkt/m":                   "credentials removed",
		"s3://secret@":                          "credentials removed",
		"s3://bkt/m\x00":                        "NUL",
		"hf://model":                            "ORG/NAME",
		"hf://org/m/x":                          "ORG/NAME",
		"hf://org/..":                           "ORG/NAME",
		"hf://org/m@":                           "revision",
		"hf://org/m@../x":                       "revision",
		"hf://org/m@a//b":                       "revision",
		"hf://org/m@main?region=us-east-1":      "S3 option",
		"hf://org/m?include=[z-a]":              "include",
		"hf://u:secret@org/m":                   "credentials removed",
		"oci://":                                "registry",
		"oci://reg":                             "repository",
		"oci://reg/":                            "repository",
		"oci://reg/Upper":                       "repository",
		"oci://reg/a//b":                        "repository",
		"oci://reg/a/../b":                      "repository",
		"oci://reg/-a":                          "repository",
		"oci://reg/a:":                          "tag",
		"oci://reg/a:-x":                        "tag",
		"oci://reg/a@sha256:abc":                "digest",
		"oci://reg/a@sha512:" + strings.Repeat("0", 128):                                             "other algorithms",
		"oci://reg/a:t@" + "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": "not both",
		"oci://reg:99999/a":                     "port",
		"oci://reg:/a":                          "registry",
		"oci://reg_x/a":                         "registry",
		"oci://[::1]:5000/a":                    "registry",
		"oci://u:secret@reg/a":                  "credentials removed",
		"oci://reg/a?endpoint=https://reg":      "not an option of an oci:// ref",
		"oci://reg/a?region=us-east-1":          "not an option of an oci:// ref",
		"oci://reg/" + strings.Repeat("a", 256): "repository",
		"gs://ab/m":                             "3 to 63",
		"gs://" + strings.Repeat("a", 64):       "3 to 63",
		"gs://Models/m":                         "lowercase",
		"gs://-models/m":                        "lowercase",
		"gs://models-/m":                        "lowercase",
		"gs://a..b/m":                           "lowercase",
		"gs://goog-models/m":                    "goog",
		"gs://my-google-models/m":               "google",
		"gs://192.168.1.1/m":                    "IP address",
		"gs://bkt/a/../x":                       `".." segment`,
		"gs://bkt/m?region=us-east1":            "gs:// ref has none",
		"gs://u:secret@bkt/m":                   "credentials removed",
		"gs:/bkt":                               "gs://BUCKET",
	}
	for s, frag := range bad {
		_, err := model.ParseRef(s)
		if !errors.Is(err, model.ErrInvalidRef) || !strings.Contains(err.Error(), frag) {
			t.Errorf("ParseRef(%q) = %v; want ErrInvalidRef mentioning %q", s, err, frag)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseRef(%q) leaks a secret: %v", s, err)
		}
	}
}

// A gs:// ref and an s3:// ref of one bucket and prefix are two places.
func TestGCSRef(t *testing.T) {
	gs, _ := model.ParseRef("gs://models/m")
	s3, _ := model.ParseRef("s3://models/m")
	src, _ := model.ParseRef("gs://models/m?source=gcs")
	ep, _ := model.ParseRef("gs://models/m?endpoint=http://h:1")
	if gs.Scope() != "gs/models" || src.Scope() != "gs:source=gcs/models" || ep.Scope() != "gs:endpoint=http://h:1/models" || gs.Scope() == s3.Scope() {
		t.Errorf("scopes %q %q %q (s3 %q)", gs.Scope(), src.Scope(), ep.Scope(), s3.Scope())
	}
	if gs.ID() == s3.ID() || gs.String() != "gs://models/m" {
		t.Errorf("gs %s (%s), s3 %s (%s)", gs, gs.ID(), s3, s3.ID())
	}
}

func TestOCIRef(t *testing.T) {
	tag, _ := model.ParseRef("oci://reg.example/org/m:v1")
	dig, _ := model.ParseRef("oci://reg.example/org/m@sha256:" + strings.Repeat("ab", 32))
	src, _ := model.ParseRef("oci://reg.example/org/m:v1?source=corp")
	if tag.Scope() != "oci/reg.example/org/m" || dig.Scope() != tag.Scope() || src.Scope() != "oci:source=corp/reg.example/org/m" {
		t.Errorf("scopes %q %q %q", tag.Scope(), dig.Scope(), src.Scope())
	}
	if tag.ID() == dig.ID() || tag.ID() == src.ID() {
		t.Error("a tag, a digest and a source are three locations")
	}
	hf, _ := model.ParseRef("hf://org/m@v1")
	if hf.Scope() == tag.Scope() || hf.ID() == tag.ID() {
		t.Error("an hf:// and an oci:// ref share a scope or an id")
	}
	// A volume attribute cannot add what an oci:// ref has no use for.
	for _, k := range []string{"endpoint", "region"} {
		v := map[string]string{"endpoint": "https://reg.example", "region": "us-east-1"}[k]
		if err := tag.SetOption(k, v); err == nil || !strings.Contains(err.Error(), "oci://") {
			t.Errorf("SetOption(%s) on an oci:// ref: %v", k, err)
		}
	}
}

func TestRefIDIgnoresRevision(t *testing.T) {
	a, _ := model.ParseRef("s3://bkt/m")
	b, _ := model.ParseRef("s3://bkt/m?revision=0123456789abcdef")
	c, _ := model.ParseRef("s3://bkt/m?source=other")
	if a.ID() != b.ID() || a.ID() == c.ID() || len(a.ID()) != 32 {
		t.Fatalf("ids %s %s %s", a.ID(), b.ID(), c.ID())
	}
}

func TestRelPath(t *testing.T) {
	ok := map[string]string{"m/a.bin": "a.bin", "m/d/e f/ü.json": "d/e f/ü.json", "m/..a": "..a"}
	for key, want := range ok {
		got, skip, err := model.RelPath("m", key)
		if err != nil || skip || got != want {
			t.Errorf("RelPath(%q) = %q %v %v", key, got, skip, err)
		}
	}
	for _, key := range []string{"m/", "m/dir/"} {
		if _, skip, err := model.RelPath("m", key); !skip || err != nil {
			t.Errorf("RelPath(%q): want skipped marker, got %v %v", key, skip, err)
		}
	}
	for _, key := range []string{"m/a/../../etc/x", "m//abs", "m/..", "m/.", "m/a/./b", "other/x", "m/a\x00b", "m/../", "m/\xff"} {
		_, _, err := model.RelPath("m", key)
		if !errors.Is(err, model.ErrUnsafeKey) || !strings.Contains(err.Error(), "key") {
			t.Errorf("RelPath(%q) = %v; want ErrUnsafeKey", key, err)
		}
	}
	if _, _, err := model.RelPath("", "/abs"); !errors.Is(err, model.ErrUnsafeKey) {
		t.Errorf("absolute key at bucket root accepted: %v", err)
	}
}

func TestManifestValidate(t *testing.T) {
	ref, _ := model.ParseRef("s3://bkt/m")
	m, err := model.NewManifest(ref, []model.File{{Path: "b", Size: 1, ETag: "x"}, {Path: "a", Size: 2, ETag: "y"}})
	if err != nil || m.Files[0].Path != "a" || m.Size() != 3 || m.Complete() {
		t.Fatalf("NewManifest: %+v %v", m, err)
	}
	rev := m.Revision()
	m.Files[0].Digest = "xxh64t:0123456789abcdef"
	if m.Revision() != rev {
		t.Fatal("revision depends on content digests; it must be known from a listing")
	}
	for name, files := range map[string][]model.File{
		"dup":        {{Path: "a"}, {Path: "a"}},
		"file+dir":   {{Path: "a/b"}, {Path: "a/b-c"}, {Path: "a/b/c"}},
		"traversal":  {{Path: "../x"}},
		"negative":   {{Path: "a", Size: -1}},
		"bad digest": {{Path: "a", Digest: "md5:zz"}},
	} {
		if _, err := model.NewManifest(ref, files); !errors.Is(err, model.ErrInvalidManifest) {
			t.Errorf("%s: %v, want ErrInvalidManifest", name, err)
		}
	}
	b, _ := m.Encode()
	back, err := model.DecodeManifest(b)
	if err != nil || back.Revision() != rev {
		t.Fatalf("decode: %v", err)
	}
	if _, err := model.DecodeManifest([]byte(`{"ref":"s3://bkt/m","files":[{"path":"/etc/passwd"}]}`)); err == nil {
		t.Fatal("decoded a manifest with an absolute path")
	}
}

func TestDigestReaderShortInput(t *testing.T) {
	if _, err := model.DigestReader(bytes.NewReader([]byte("abc")), 4, nil); err == nil {
		t.Fatal("short input accepted")
	}
	if _, err := model.DigestReader(bytes.NewReader([]byte("abcde")), 4, nil); err == nil {
		t.Fatal("long input accepted")
	}
}

func TestRefStringKeepsPatternsReadable(t *testing.T) {
	r, err := model.ParseRef("hf://org/m@main?include=*.safetensors,*.json&exclude=original/,a%26b&source=hub")
	if err != nil {
		t.Fatal(err)
	}
	want := "hf://org/m@main?exclude=original/,a%26b&include=*.safetensors,*.json&source=hub"
	if got := r.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
