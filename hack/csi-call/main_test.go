package main

import (
	"io"
	"strings"
	"testing"
)

func TestAttrFlag(t *testing.T) {
	a := attrFlag{}
	for _, s := range []string{"model=s3://b/p?source=local", "csi.storage.k8s.io/ephemeral=true", "empty="} {
		if err := a.Set(s); err != nil {
			t.Fatalf("Set(%q): %v", s, err)
		}
	}
	want := map[string]string{"model": "s3://b/p?source=local", "csi.storage.k8s.io/ephemeral": "true", "empty": ""}
	if len(a) != len(want) {
		t.Fatalf("got %v, want %v", a, want)
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("%s = %q, want %q", k, a[k], v)
		}
	}
	// A typo must fail here, not send a volume_context the plugin reads
	// otherwise than meant.
	for _, s := range []string{"model", "=x", "model=other"} {
		if err := a.Set(s); err == nil {
			t.Errorf("Set(%q) succeeded, want an error", s)
		}
	}
}

func TestAccessMode(t *testing.T) {
	var m accessMode
	if err := m.Set("multi_node_reader_only"); err != nil || m.String() != "MULTI_NODE_READER_ONLY" {
		t.Errorf("Set(multi_node_reader_only) = %v, mode %s", err, m)
	}
	for _, s := range []string{"UNKNOWN", "rw", ""} {
		if err := m.Set(s); err == nil {
			t.Errorf("Set(%q) succeeded, want an error", s)
		}
	}
}

// Missing flags fail before anything is dialled.
func TestRunRefusesIncompleteRequests(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"info", nil, "--socket is required"},
		{"publish", []string{"--socket", "/nonexistent", "--target", "/x"}, "--volume-id and --target"},
		{"unpublish", []string{"--socket", "/nonexistent", "--volume-id", "v"}, "--volume-id and --target"},
		{"mount", nil, "usage"},
	} {
		err := run(tc.cmd, tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%s %v) = %v, want an error containing %q", tc.cmd, tc.args, err, tc.want)
		}
	}
}
