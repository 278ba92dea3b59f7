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

// TestCommitBatchCrashOrder: one-leaf ingests committed together
// (CommitBatch) follow Commit's order. Written but not committed (a kill
// between the write and the sync), nothing is in blobs/ and the next Open
// drops the files, so a resume fetches them whole and trusts none of their
// bytes; a batch with one wrong file commits the others, each complete,
// verified and 0444, and leaves nothing of the wrong one.
func TestCommitBatchCrashOrder(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, 1<<30)
	ingest := filepath.Join(root, "ingest")
	blobs := filepath.Join(root, "blobs", model.DigestAlgorithm)
	var datas [][]byte
	var keys []cache.IngestKey
	var want []model.Digest
	for i := range 4 {
		d := randBytes(uint64(100+i), 100<<10+i)
		datas = append(datas, d)
		keys = append(keys, cache.IngestKey{Scope: "s3://x/b", Origin: "b/f" + string(rune('0'+i)), ETag: "e" + string(rune('0'+i)), Size: int64(len(d))})
		dg, _ := model.DigestReader(bytes.NewReader(d), int64(len(d)), nil)
		want = append(want, dg)
	}
	open := func() []*cache.Ingest {
		t.Helper()
		var ws []*cache.Ingest
		for i, k := range keys {
			w, err := s.OpenIngest(k)
			if err != nil {
				t.Fatal(err)
			}
			if !w.OneLeaf() || w.HeldBytes() != 0 || len(w.Pending()) != 1 {
				t.Fatalf("ingest %d: one leaf %v, held %d, pending %v", i, w.OneLeaf(), w.HeldBytes(), w.Pending())
			}
			ws = append(ws, w)
		}
		return ws
	}
	// Kill after the writes, before the commit: no blob; the next Open
	// removes the partial files, and the ingests start from nothing.
	for i, w := range open() {
		w.WriteAt(datas[i], 0)
		w.MarkLeaf(0, 0)
	}
	if ents, _ := os.ReadDir(blobs); len(ents) != 0 {
		t.Fatalf("blobs/ before the commit: %v", ents)
	}
	s.Close()
	s = openStore(t, root, 1<<30)
	if ents, _ := os.ReadDir(ingest); len(ents) != 0 {
		t.Fatalf("Open after a crash left %v", ents)
	}
	ws := open() // checks that nothing was resumed
	for i, w := range ws {
		b := datas[i]
		if i == 2 {
			b = bytes.Clone(b)
			b[7] ^= 1 // corrupt bytes: refused, the others still commit
		}
		w.WriteAt(b, 0)
		w.MarkLeaf(0, 0)
	}
	ds, errs := s.CommitBatch(ws, want)
	for i := range ws {
		if i == 2 {
			if !errors.Is(errs[i], cache.ErrCorrupt) || s.HasBlob(want[i]) {
				t.Fatalf("wrong file: %v, held %v", errs[i], s.HasBlob(want[i]))
			}
			continue
		}
		if errs[i] != nil || ds[i] != want[i] {
			t.Fatalf("file %d: %s %v, want %s", i, ds[i], errs[i], want[i])
		}
		p := filepath.Join(blobs, ds[i].Hex())
		fi, err := os.Stat(p)
		got, _ := os.ReadFile(p)
		if err != nil || fi.Mode().Perm() != 0o444 || !bytes.Equal(got, datas[i]) {
			t.Fatalf("blob %d: %v %v, content ok %v", i, fi, err, bytes.Equal(got, datas[i]))
		}
	}
	if ents, _ := os.ReadDir(ingest); len(ents) != 0 {
		t.Fatalf("batch commit left %v", ents)
	}
	// Committed blobs survive a restart, and are found by ETag.
	s.Close()
	s = openStore(t, root, 1<<30)
	for i, k := range keys {
		if d, ok := s.LookupETag(k.Scope, k.ETag, k.Size); ok != (i != 2) || (ok && d != want[i]) {
			t.Fatalf("file %d after restart: %s %v", i, d, ok)
		}
	}
	// The same bytes again under new ETags: dedup, the blobs stay as they
	// are and nothing of the ingests is left.
	var again []*cache.Ingest
	for i := range 2 {
		k := keys[i]
		k.ETag += "-again"
		w, err := s.OpenIngest(k)
		if err != nil {
			t.Fatal(err)
		}
		w.WriteAt(datas[i], 0)
		w.MarkLeaf(0, 0)
		again = append(again, w)
	}
	ds, errs = s.CommitBatch(again, want[:2])
	if errs[0] != nil || errs[1] != nil || ds[0] != want[0] || ds[1] != want[1] {
		t.Fatalf("dedup batch: %v %v", ds, errs)
	}
	if ents, _ := os.ReadDir(ingest); len(ents) != 0 {
		t.Fatalf("dedup batch left %v", ents)
	}
}
