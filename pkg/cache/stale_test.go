package cache_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/model"
)

// TestStalePartialDownloadsAgeOut: a partial download nobody resumed for
// longer than the age is removed with its preallocated blocks; a recent one
// stays for a resume, and one a download has open is never touched, however
// old its files look.
func TestStalePartialDownloadsAgeOut(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, 1<<30)
	ingests := filepath.Join(root, "ingest")
	data := randBytes(3, 2*model.LeafSize)
	// open starts a two-leaf download, writes its first leaf and returns the
	// ingest with the directory it made.
	open := func(etag string) (*cache.Ingest, string) {
		before, _ := os.ReadDir(ingests)
		w, err := s.OpenIngest(cache.IngestKey{Origin: "b/" + etag, ETag: etag, Size: int64(len(data))})
		if err != nil {
			t.Fatal(err)
		}
		off, n := model.LeafRange(int64(len(data)), 0)
		if _, err := w.WriteAt(data[off:off+n], off); err != nil {
			t.Fatal(err)
		}
		if err := w.MarkLeaf(0, xxhash.Sum64(data[off:off+n])); err != nil {
			t.Fatal(err)
		}
		after, _ := os.ReadDir(ingests)
		for _, e := range after {
			if !slices.ContainsFunc(before, func(b os.DirEntry) bool { return b.Name() == e.Name() }) {
				return w, filepath.Join(ingests, e.Name())
			}
		}
		t.Fatal("no new ingest directory")
		return nil, ""
	}
	age := func(dir string, d time.Duration) {
		old := time.Now().Add(-d)
		files, _ := os.ReadDir(dir)
		for _, f := range files {
			os.Chtimes(filepath.Join(dir, f.Name()), old, old)
		}
		os.Chtimes(dir, old, old)
	}
	w, stale := open("stale")
	w.Close() // kept for a resume
	age(stale, 48*time.Hour)
	w, recent := open("recent")
	w.Close()
	age(recent, time.Hour)
	busy, busyDir := open("busy")
	age(busyDir, 72*time.Hour)

	if p := s.Partials(); p.Count != 3 || p.Bytes < 3*model.LeafSize {
		t.Fatalf("partials before: %+v, want 3 holding at least a leaf each", p)
	}
	dropped, err := s.DropStaleIngests(24 * time.Hour)
	if err != nil || dropped.Count != 1 || dropped.Bytes < model.LeafSize {
		t.Fatalf("dropped %+v (%v), want the stale one with its leaf", dropped, err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale ingest still there (%v)", err)
	}
	for _, dir := range []string{recent, busyDir} {
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("%s was removed: %v", dir, err)
		}
	}
	// The open download goes on undisturbed and commits.
	off, n := model.LeafRange(int64(len(data)), 1)
	if _, err := busy.WriteAt(data[off:off+n], off); err != nil {
		t.Fatal(err)
	}
	if err := busy.MarkLeaf(1, xxhash.Sum64(data[off:off+n])); err != nil {
		t.Fatal(err)
	}
	d, err := busy.Commit("")
	if err != nil || !s.HasBlob(d) {
		t.Fatalf("commit of the open download after the sweep: %v", err)
	}
	// The recent one resumes with its leaf.
	w, err = s.OpenIngest(cache.IngestKey{Origin: "b/recent", ETag: "recent", Size: int64(len(data))})
	if err != nil || w.HeldBytes() != model.LeafSize {
		t.Fatalf("resume of the recent ingest: %v", err)
	}
	w.Abort()
	if p := s.Partials(); p.Count != 0 || p.Bytes != 0 {
		t.Fatalf("partials after: %+v", p)
	}
}
