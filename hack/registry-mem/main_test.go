package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source/oci"
)

func TestServesADirectoryAsAnArtifact(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{}`), 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "w.safetensors"), []byte("weights"), 0o644)
	ep := filepath.Join(t.TempDir(), "endpoint")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, "e2e/m", "v1", dir, ep) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var host string
	for deadline := time.Now().Add(20 * time.Second); host == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no endpoint file")
		}
		b, _ := os.ReadFile(ep)
		host = strings.TrimSpace(string(b))
	}
	if _, err := model.ParseRef("oci://" + host + "/e2e/m:v1"); err != nil {
		t.Fatal(err)
	}
	c, err := oci.New(oci.Options{Registry: host, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	m := c.Model("e2e/m", "v1")
	l, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Files) != 2 || l.Files[1].Path != "sub/w.safetensors" || !strings.HasPrefix(l.Revision, "sha256:") {
		t.Fatalf("listing %+v", l)
	}
	r, err := m.Open(context.Background(), l.Files[1], 0, l.Files[1].Size)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if b, _ := io.ReadAll(r); string(b) != "weights" {
		t.Errorf("read %q", b)
	}
}
