package cache_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/model"
)

// TestOneLeafIngest: a blob of at most one leaf is ingested through one
// file (no directory, meta or journal), locked like any ingest, removed by
// Close and by the next Open after a crash, and committed in the same order
// and with the same checks as a large one.
func TestOneLeafIngest(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, 1<<30)
	data := randBytes(11, 300<<10)
	key := cache.IngestKey{Origin: "b/small", ETag: "small", Size: int64(len(data))}
	ingest := filepath.Join(root, "ingest")
	onlyOneFile := func() {
		t.Helper()
		ents, _ := os.ReadDir(ingest)
		if len(ents) != 1 || ents[0].IsDir() || !strings.HasSuffix(ents[0].Name(), ".one") {
			t.Fatalf("ingest/ holds %v, want one .one file", ents)
		}
	}

	w, err := s.OpenIngest(key)
	if err != nil {
		t.Fatal(err)
	}
	onlyOneFile()
	if _, err := s.OpenIngest(key); !errors.Is(err, cache.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if got := w.Pending(); len(got) != 1 {
		t.Fatalf("pending %v, want [0]", got)
	}
	w.WriteAt(data[:1000], 0)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(ingest); len(ents) != 0 {
		t.Fatalf("Close left %v", ents)
	}

	// A crash (no Close, no Commit) leaves the file; the next Open drops it.
	w, err = s.OpenIngest(key)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteAt(data, 0)
	s.Close()
	s = openStore(t, root, 1<<30)
	if ents, _ := os.ReadDir(ingest); len(ents) != 0 {
		t.Fatalf("Open after a crash left %v", ents)
	}

	// Wrong bytes are refused at commit, and nothing is left behind.
	w, err = s.OpenIngest(key)
	if err != nil {
		t.Fatal(err)
	}
	if w.HeldBytes() != 0 {
		t.Fatalf("one-leaf ingest resumed %d bytes", w.HeldBytes())
	}
	// The digest is of the bytes in the file, whatever the writer claims
	// about them: wrong bytes with the right leaf sum are still refused.
	wrong := bytes.Clone(data)
	wrong[len(wrong)/2] ^= 1
	w.WriteAt(wrong, 0)
	w.MarkLeaf(0, xxhash.Sum64(data))
	want, _ := model.DigestReader(bytes.NewReader(data), int64(len(data)), nil)
	if _, err := w.Commit(want); !errors.Is(err, cache.ErrCorrupt) {
		t.Fatalf("commit of wrong bytes: %v, want ErrCorrupt", err)
	}
	if ents, _ := os.ReadDir(ingest); len(ents) != 0 {
		t.Fatalf("failed commit left %v", ents)
	}

	d := put(t, s, "small", data)
	if d != want || !s.HasBlob(d) {
		t.Fatalf("digest %s (held %v), want %s", d, s.HasBlob(d), want)
	}
	fi, err := os.Stat(filepath.Join(root, "blobs", d.Algorithm(), d.Hex()))
	if err != nil || fi.Mode().Perm() != 0o444 || fi.Size() != int64(len(data)) {
		t.Fatalf("blob %v %v", fi, err)
	}
	if ents, _ := os.ReadDir(ingest); len(ents) != 0 {
		t.Fatalf("commit left %v", ents)
	}
	// The same content again: dedup drops the second file.
	if put(t, s, "small-again", data) != d {
		t.Fatal("same bytes, other digest")
	}
	if ents, _ := os.ReadDir(ingest); len(ents) != 0 {
		t.Fatalf("dedup commit left %v", ents)
	}
}
