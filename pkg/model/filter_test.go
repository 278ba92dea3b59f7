package model

import (
	"errors"
	"strings"
	"testing"
)

// The cases are huggingface_hub's documented and Python fnmatch's own
// behaviour (fnmatch.fnmatchcase), so patterns users copy from
// snapshot_download(allow_patterns=...) select the same files here.
func TestFilterMatchesLikeHuggingFaceHub(t *testing.T) {
	for _, tc := range []struct {
		pattern, path string
		want          bool
	}{
		{"*.json", "config.json", true},
		{"*.json", "a/b/c.json", true}, // "*" crosses "/"
		{"data/*.json", "data/subdir/file.json", true},
		{"README.*", "docs/README.md", false}, // anchored to the whole path
		{"*.md", "README.MD", false},          // case-sensitive
		{"x?y", "x/y", true},                  // "?" matches "/" too
		{"**/x", "x", false},                  // needs a "/" before x
		{"**/x", "a/x", true},
		{"*", ".gitattributes", true}, // leading dots are not special
		{"original/", "original/consolidated.00.pth", true},
		{"original/", "original", false},
		{"model-0000[1-3]-of-00003.safetensors", "model-00002-of-00003.safetensors", true},
		{"model-0000[!1]*", "model-00001-of-00003.safetensors", false},
		{"model-0000[!1]*", "model-00002-of-00003.safetensors", true},
		{"[^a]", "^", true}, // "^" is literal in a class
		{"[^a]", "b", false},
		{"[]]", "]", true},   // "]" first is a member
		{"a[b", "a[b", true}, // an unclosed "[" is literal
		{"a.b", "aXb", false},
		{`a\b`, `a\b`, true}, // no escapes: "\" is a character
		{"(x)+", "(x)+", true},
	} {
		f, err := NewFilter([]string{tc.pattern}, nil)
		if err != nil {
			t.Errorf("%q: %v", tc.pattern, err)
			continue
		}
		if got := f.Keep(tc.path); got != tc.want {
			t.Errorf("include %q, path %q: keep %v, want %v", tc.pattern, tc.path, got, tc.want)
		}
	}
}

func TestFilterExcludeWins(t *testing.T) {
	f, err := NewFilter([]string{"*.safetensors", "*.json"}, []string{"original/", "*.bin"})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"model.safetensors":           true,
		"config.json":                 true,
		"original/params.json":        false,
		"pytorch_model.bin":           false,
		"tokenizer.model":             false,
		"original/model.safetensors":  false,
		"sub/model-00001.safetensors": true,
	} {
		if got := f.Keep(path); got != want {
			t.Errorf("%s: keep %v, want %v", path, got, want)
		}
	}
	var zero Filter
	if !zero.Keep("anything") || !zero.Empty() {
		t.Error("the zero Filter must keep everything")
	}
	if s := f.String(); !strings.Contains(s, "exclude original/") {
		t.Errorf("String: %q", s)
	}
}

func TestFilterRefusesBadPatterns(t *testing.T) {
	many := make([]string, MaxPatterns+1)
	for i := range many {
		many[i] = "*"
	}
	for name, in := range map[string][]string{
		"empty":    {""},
		"long":     {strings.Repeat("a", MaxPatternLength+1)},
		"NUL":      {"a\x00b"},
		"reversed": {"[z-a]"},
		"too many": many,
	} {
		if _, err := NewFilter(in, nil); !errors.Is(err, ErrInvalidPattern) {
			t.Errorf("%s: err %v, want ErrInvalidPattern", name, err)
		}
	}
}
