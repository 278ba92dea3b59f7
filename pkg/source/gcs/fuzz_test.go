package gcs

import (
	"encoding/json"
	"testing"

	"github.com/modelcache/modelcache/pkg/model"
)

// A page of objects.list is what a hostile server writes: decoding it and
// checking every object must never panic, and what passes must be a safe,
// valid file whose version token reads back.
func FuzzListPage(f *testing.F) {
	f.Add("m", page("", item("m/config.json", `"2"`)))
	f.Add("m", page("next", item("m/w", 3), `{"name":"m/x","size":"1","generation":"5","crc32c":"AAAAAA=="}`))
	f.Add("", page("", item("../x", `"1"`), item("a//b", `"1"`), item("d/", `"0"`)))
	f.Add("m", `{"items":[{"name":"m/a","size":"01","generation":"-1","md5Hash":"=="}]}`)
	f.Fuzz(func(t *testing.T, prefix, body string) {
		var pg listPage
		if json.Unmarshal([]byte(body), &pg) != nil {
			return
		}
		for _, o := range pg.Items {
			fl, ok, err := fileOf(prefix, o)
			if err != nil || !ok {
				continue
			}
			if _, skip, err := model.RelPath("", fl.Path); err != nil || skip {
				t.Fatalf("object %+v passed with path %q: %v", o, fl.Path, err)
			}
			if fl.Size < 0 || fl.Size > model.MaxFileSize {
				t.Fatalf("object %+v passed with size %d", o, fl.Size)
			}
			gen, _, ok := parseETag(fl.ETag)
			if !ok || gen == "" {
				t.Fatalf("object %+v passed with token %q, which does not read back", o, fl.ETag)
			}
		}
	})
}
