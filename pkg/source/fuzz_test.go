package source

import (
	"strings"
	"testing"
)

// Patterns come from annotations and volume attributes: none may panic the
// agent, and a compiled filter must answer for any path.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{"*.safetensors", "original/", "[!a]*", "[]]", "a[b", "[z-a]", `\`, "[^x]", "**/*.json"} {
		f.Add(s, "original/model-00001-of-00002.safetensors")
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		flt, err := NewFilter([]string{pattern}, []string{pattern})
		if err != nil {
			return
		}
		if flt.Keep(path) {
			t.Fatalf("%q both includes and excludes %q, and exclude must win", pattern, path)
		}
		if strings.HasSuffix(pattern, "/") && !strings.ContainsAny(pattern, "*?[") {
			inc, _ := NewFilter([]string{pattern}, nil)
			if !inc.Keep(pattern + "x") {
				t.Fatalf("folder pattern %q does not keep %q", pattern, pattern+"x")
			}
		}
	})
}
