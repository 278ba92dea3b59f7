package hf

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/model"
)

// A tree page is what a hostile Hub writes: decoding it and checking every
// entry must never panic, and what passes must be a safe, valid file.
func FuzzTreeEntries(f *testing.F) {
	f.Add(`[{"type":"file","path":"config.json","oid":"` + commit + `","size":2}]`)
	f.Add(`[{"type":"file","path":"w","oid":"` + commit + `","size":3,"lfs":{"oid":"` + strings.Repeat("ab", 32) + `","size":3}}]`)
	f.Add(`[{"type":"directory","path":"sub"},{"type":"file","path":"sub/../../x","size":1}]`)
	f.Fuzz(func(t *testing.T, page string) {
		var entries []treeEntry
		if json.Unmarshal([]byte(page), &entries) != nil {
			return
		}
		for _, e := range entries {
			fl, ok, err := fileOf(e)
			if err != nil || !ok {
				continue
			}
			if _, skip, err := model.RelPath("", fl.Path); err != nil || skip {
				t.Fatalf("entry %+v passed with path %q: %v", e, fl.Path, err)
			}
			if fl.Size < 0 || fl.Size > model.MaxFileSize {
				t.Fatalf("entry %+v passed with size %d", e, fl.Size)
			}
			if fl.Digest != "" {
				if err := fl.Digest.Validate(); err != nil {
					t.Fatalf("entry %+v passed with digest %q: %v", e, fl.Digest, err)
				}
			}
		}
	})
}
