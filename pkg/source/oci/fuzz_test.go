package oci

import (
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/model"
)

// A manifest is what a hostile registry writes: reading it must never
// panic, and every file that passes must be safe and valid, each path
// once.
func FuzzManifestFiles(f *testing.F) {
	d := `"sha256:` + strings.Repeat("ab", 32) + `"`
	f.Add(MediaTypeManifest, `{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":`+d+`,"size":3,"annotations":{"org.opencontainers.image.title":"a/b.json"}}]}`)
	f.Add(MediaTypeManifest, `{"schemaVersion":2,"layers":[{"digest":`+d+`,"size":1,"annotations":{"org.cncf.model.filepath":"../x"}}]}`)
	f.Add("application/json", `{"schemaVersion":2,"mediaType":"`+MediaTypeIndex+`","manifests":[{"digest":`+d+`,"platform":{"os":"linux"}}]}`)
	c := &Client{registry: "reg", maxFiles: 100}
	f.Fuzz(func(t *testing.T, contentType, body string) {
		files, err := c.files("oci://reg/m:v1", contentType, []byte(body))
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, fl := range files {
			if _, skip, err := model.RelPath("", fl.Path); err != nil || skip || seen[fl.Path] {
				t.Fatalf("file %q passed: %v (twice: %t)", fl.Path, err, seen[fl.Path])
			}
			seen[fl.Path] = true
			if fl.Size < 0 || fl.Size > model.MaxFileSize || fl.Digest.Validate() != nil || fl.Digest.Hex() != fl.ETag || fl.Digest.Algorithm() != "sha256" {
				t.Fatalf("file %+v passed", fl)
			}
		}
	})
}
