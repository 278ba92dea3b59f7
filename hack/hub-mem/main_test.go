package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcache/modelcache/pkg/source/hf"
)

func TestServesADirectoryAsAGatedRepo(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{}`), 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "w.safetensors"), make([]byte, lfsAt), 0o644)
	ep := filepath.Join(t.TempDir(), "endpoint")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, "org/m", dir, "hf_t", ep) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var url string
	for deadline := time.Now().Add(10 * time.Second); url == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no endpoint file")
		}
		b, _ := os.ReadFile(ep)
		url = strings.TrimSpace(string(b))
	}
	for token, ok := range map[string]bool{"hf_t": true, "": false} {
		c, err := hf.New(hf.Options{Endpoint: url, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		l, err := c.Model("org/m", "main").List(context.Background())
		if (err == nil) != ok {
			t.Fatalf("token %q: %v", token, err)
		}
		if ok && (len(l.Files) != 2 || l.Files[1].Path != "sub/w.safetensors" || l.Files[1].Digest == "" || l.Files[0].Digest != "") {
			t.Errorf("listing %+v: want config.json plain and sub/w.safetensors as LFS", l.Files)
		}
	}
	if err := run(context.Background(), "org/m", t.TempDir(), "", ""); err == nil {
		t.Error("an empty directory was served")
	}
}
