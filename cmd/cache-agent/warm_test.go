package main_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/agentapi"
)

// TestPrefetchWarmPageCache: `prefetch --warm-page-cache` against a real
// agent and S3 server reports the warm-up; after the kernel dropped the
// model's pages, a warm-up on the cached model reads them back.
func TestPrefetchWarmPageCache(t *testing.T) {
	bin := buildAgent(t)
	srv := s3test.Start(t)
	srv.CreateBucket(t, "models")
	srv.Put(t, "models", "warm/weights.bin", s3test.RandomBytes(9, 12<<20))
	srv.Put(t, "models", "warm/config.json", []byte(`{"layers":2}`))
	n := newNode(t, bin, srv.Endpoint, srv)
	n.start()
	ref := "s3://models/warm?source=test"

	out, err := n.run("prefetch", ref, "--wait", "--warm-page-cache")
	if err != nil || !strings.Contains(out, "ready") || !strings.Contains(out, "page cache: ") {
		t.Fatalf("prefetch --warm-page-cache: %v\n%s", err, out)
	}
	raw, err := n.run("status", "-o", "json")
	var st agentapi.StatusReport
	if err != nil || json.Unmarshal([]byte(raw), &st) != nil || len(st.Models) != 1 {
		t.Fatalf("status: %v\n%s", err, raw)
	}
	// Drop the model's clean pages (no root needed), as memory pressure would.
	filepath.WalkDir(filepath.Join(n.dir, "cache", "models"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
	out, err = n.run("prefetch", ref, "--cached", "--wait", "--warm-page-cache")
	if err != nil || !strings.Contains(out, "already cached") {
		t.Fatalf("prefetch --cached --warm-page-cache: %v\n%s", err, out)
	}
	// (tmpfs ignores the drop: everything is still resident there)
	if !strings.Contains(out, "page cache: 0 B of 12.0 MiB resident before, 12.0 MiB read in") &&
		!strings.Contains(out, "page cache: 12.0 MiB of 12.0 MiB resident before, 0 B read in") {
		t.Fatalf("warm-up report: %s", out)
	}
	if !strings.Contains(n.log.String(), "page cache warm-up") {
		t.Fatalf("agent did not log the warm-up:\n%s", n.log)
	}
}
