package cache_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/model"
)

// The blob's name is the SHA-256 of its bytes however the writers order
// them: pieces written by many goroutines in a shuffled order, some hashed
// from the writer's buffer and some read back, give the plain SHA-256.
func TestIngestSHA256OutOfOrder(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<32)
	for _, size := range []int{1, 4096, model.LeafSize - 1, 3*model.LeafSize + 12345} {
		data := randBytes(uint64(size), size)
		w, err := s.OpenIngest(cache.IngestKey{Scope: testScope, Origin: "x", ETag: fmt.Sprint("shuffled", size), Size: int64(size)})
		if err != nil {
			t.Fatal(err)
		}
		// A composite checksum (parts of 5 MiB and the rest) is computed
		// from the same in-order stream.
		var comp *model.Composite
		if size > 5<<20 {
			p1, p2 := sha256.Sum256(data[:5<<20]), sha256.Sum256(data[5<<20:])
			comp = &model.Composite{Sum: sha256.Sum256(append(p1[:], p2[:]...)), Parts: []int64{5 << 20, int64(size) - 5<<20}}
			if err := w.ExpectComposite(comp); err != nil {
				t.Fatal(err)
			}
		}
		const piece = 100_000 // not a multiple of anything, so pieces straddle leaves
		var offs []int
		for off := 0; off < size; off += piece {
			offs = append(offs, off)
		}
		rand.Shuffle(len(offs), func(i, j int) { offs[i], offs[j] = offs[j], offs[i] })
		var wg sync.WaitGroup
		ch := make(chan int)
		for range 8 {
			wg.Go(func() {
				for off := range ch {
					if _, err := w.WriteAt(data[off:min(off+piece, size)], int64(off)); err != nil {
						t.Error(err)
					}
				}
			})
		}
		for _, off := range offs {
			ch <- off
		}
		close(ch)
		wg.Wait()
		for i := range model.LeafCount(int64(size)) {
			off, n := model.LeafRange(int64(size), i)
			w.MarkLeaf(i, xxhash.Sum64(data[off:off+n]))
		}
		sum := sha256.Sum256(data)
		want := model.SHA256(sum[:])
		if got, err := w.Commit(want); err != nil || got != want {
			t.Fatalf("size %d: digest %s, %v; want %s", size, got, err, want)
		}
	}
}

// A range may be written once: an overlapping write is refused before it
// reaches the file, so the digest can never describe bytes that were
// replaced after they were hashed.
func TestIngestRefusesOverlap(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<30)
	w, err := s.OpenIngest(cache.IngestKey{Scope: testScope, Origin: "x", ETag: "o", Size: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := w.WriteAt(make([]byte, 50), 10); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int{{0, 11}, {59, 1}, {20, 5}, {0, 100}} {
		if _, err := w.WriteAt(make([]byte, r[1]), int64(r[0])); err == nil {
			t.Fatalf("write [%d,+%d) over [10,60) accepted", r[0], r[1])
		}
	}
	for _, r := range [][2]int{{0, 10}, {60, 40}} {
		if _, err := w.WriteAt(make([]byte, r[1]), int64(r[0])); err != nil {
			t.Fatalf("write [%d,+%d): %v", r[0], r[1], err)
		}
	}
}

// An ETag found in one scope (source or endpoint, and bucket) means nothing
// in another: a server can list any ETag, so the lookup misses.
func TestLookupETagStaysInScope(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<30)
	d := put(t, s, "victim-etag", []byte("the victim's weights"))
	if got, ok := s.LookupETag(testScope, "victim-etag", 20); !ok || got != d {
		t.Fatalf("same scope: %s %v", got, ok)
	}
	for _, scope := range []string{"endpoint=http://evil.example/bkt", "aws/other", "source=evil/bkt", ""} {
		if got, ok := s.LookupETag(scope, "victim-etag", 20); ok {
			t.Fatalf("scope %q found %s", scope, got)
		}
	}
	// Ingests are per scope too: the attacker's resumable bytes are never
	// the victim's.
	a, err := s.OpenIngest(cache.IngestKey{Scope: "endpoint=http://evil.example/bkt", ETag: "e", Size: 9 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Abort()
	b, err := s.OpenIngest(cache.IngestKey{Scope: testScope, ETag: "e", Size: 9 << 20})
	if err != nil {
		t.Fatalf("the victim's ingest is held by the attacker's: %v", err)
	}
	b.Abort()
}

// Sizes a listing may claim are bounded before anything is allocated.
func TestAbsurdSizesRefused(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<30)
	for _, size := range []int64{-1, 1 << 62, 1<<63 - 1} {
		if w, err := s.OpenIngest(cache.IngestKey{Scope: testScope, ETag: "huge", Size: size}); err == nil {
			w.Abort()
			t.Fatalf("ingest of %d bytes opened", size)
		}
	}
	if _, err := s.Reserve(-5); err == nil {
		t.Fatal("negative reservation accepted")
	}
}

// A store written by the xxh64 version opens with this one: blobs renamed
// to their SHA-256, manifests rewritten, trees moved to the new ref IDs,
// pins kept, and the model served without a download.
func TestUpgradeFromXXH64Store(t *testing.T) {
	root := t.TempDir()
	content := map[string][]byte{"config.json": []byte(`{"a":1}`), "w/model.bin": randBytes(7, 3<<20)}
	ref, _ := model.ParseRef("s3://bkt/llama?source=prod")
	oldID, rev := "0123456789abcdef", ""
	var files []model.File
	for p, b := range content {
		old := fmt.Sprintf("%016x", xxhash.Sum64(b))
		mkFile(t, filepath.Join(root, "blobs", "xxh64t", old), b, 0o444)
		files = append(files, model.File{Path: p, Size: int64(len(b)), ETag: "etag-" + p, Digest: model.Digest("xxh64t:" + old)})
	}
	m, err := model.NewManifest(ref, files)
	if err != nil {
		t.Fatal(err)
	}
	rev = m.Revision()
	mb, _ := m.Encode()
	mkFile(t, filepath.Join(root, "manifests", oldID, rev+".json"), mb, 0o644)
	for _, f := range files {
		dst := filepath.Join(root, "models", oldID, rev, f.Path)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := os.Link(filepath.Join(root, "blobs", "xxh64t", f.Digest.Hex()), dst); err != nil {
			t.Fatal(err)
		}
	}
	state := map[string]any{"refs": map[string]any{oldID: map[string]any{"ref": ref.Location().String(), "current": rev,
		"revisions": map[string]any{rev: map[string]any{"size": m.Size(), "files": 2, "pins": map[string]string{"vol-1": "2026-01-01T00:00:00Z"}}}}}}
	sb, _ := json.Marshal(state)
	mkFile(t, filepath.Join(root, "state.json"), sb, 0o644)
	mkFile(t, filepath.Join(root, "index.log"), []byte("etag-config.json\t7\txxh64t:0000000000000001\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "ingest", "fedcba9876543210"), 0o700)

	s := openStore(t, root, 1<<30)
	got, err := s.Lookup(ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != rev || got.Path != filepath.Join(root, "models", ref.ID(), rev) {
		t.Fatalf("model after upgrade: %+v", got)
	}
	st := s.Status()
	if len(st.Models) != 1 || fmt.Sprint(st.Models[0].Pins) != "[vol-1]" {
		t.Fatalf("pins after upgrade: %+v", st.Models)
	}
	mm, err := s.Manifest(ref, rev)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range mm.Files {
		sum := sha256.Sum256(content[f.Path])
		if f.Digest != model.SHA256(sum[:]) || !s.HasBlob(f.Digest) {
			t.Fatalf("%s: digest %s after upgrade", f.Path, f.Digest)
		}
		b, err := os.ReadFile(filepath.Join(got.Path, f.Path))
		if err != nil || !bytes.Equal(b, content[f.Path]) {
			t.Fatalf("%s: tree content changed: %v", f.Path, err)
		}
		if d, ok := s.LookupETag(ref.Scope(), f.ETag, f.Size); !ok || d != f.Digest {
			t.Fatalf("%s: etag index not rebuilt: %s %v", f.Path, d, ok)
		}
	}
	for _, gone := range []string{"blobs/xxh64t", "manifests/" + oldID, "models/" + oldID, "upgrade.map", "ingest/fedcba9876543210"} {
		if _, err := os.Stat(filepath.Join(root, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left after upgrade: %v", gone, err)
		}
	}
	// Verify agrees with the new names, and a second open changes nothing.
	if rep, err := s.Verify(t.Context()); err != nil || len(rep.Corrupt) != 0 || rep.Blobs != 2 {
		t.Fatalf("verify after upgrade: %+v %v", rep, err)
	}
	s.Close()
	s = openStore(t, root, 1<<30)
	if again, err := s.Lookup(ref); err != nil || again.Path != got.Path {
		t.Fatalf("second open: %+v %v", again, err)
	}
}

func mkFile(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

// Partial downloads count against the capacity: downloads that keep
// failing half way (a server answering 500) cannot fill the disk past it.
// Each new reservation drops the oldest partial download it needs room of.
func TestPartialDownloadsCountAgainstCapacity(t *testing.T) {
	const capacity = 64 << 20
	root := t.TempDir()
	s := openStore(t, root, capacity)
	size := int64(48 << 20)
	for i := range 5 {
		res, err := s.Reserve(size)
		if err != nil {
			t.Fatalf("download %d: %v", i, err)
		}
		w, err := res.OpenIngest(cache.IngestKey{Scope: "endpoint=http://flaky/bkt", ETag: fmt.Sprint("flaky", i), Size: size})
		if err != nil {
			t.Fatal(err)
		}
		half := randBytes(uint64(i), int(size/2))
		if _, err := w.WriteAt(half, 0); err != nil {
			t.Fatal(err)
		}
		w.Close() // the download failed: kept for a resume
		res.Release()
		if p := s.Partials(); p.Bytes > capacity {
			t.Fatalf("after %d failed downloads partial downloads hold %d bytes, capacity %d", i+1, p.Bytes, capacity)
		}
	}
	// A model that needs the room still fits: the partials give way.
	m := putModel(t, s, "s3://bkt/needs-room", map[string][]byte{"w": randBytes(9, 40<<20)})
	if p := s.Partials(); p.Bytes+m.Size > capacity {
		t.Fatalf("model %d + partial downloads %d bytes, capacity %d", m.Size, p.Bytes, capacity)
	}
	// The count survives a restart.
	s.Close()
	s = openStore(t, root, capacity)
	if _, err := s.Reserve(capacity - m.Size); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if p := s.Partials(); p.Bytes+m.Size > capacity {
		t.Fatalf("after restart: model %d + partial downloads %d bytes, capacity %d", m.Size, p.Bytes, capacity)
	}
}

// xxhCollision returns two different 16-byte inputs with the same xxh64
// (found by Brent's cycle search over x → xxh64(x‖x), 5 CPU minutes).
func xxhCollision(t *testing.T) (a, b []byte) {
	t.Helper()
	twice := func(x uint64) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint64(b, x)
		binary.LittleEndian.PutUint64(b[8:], x)
		return b
	}
	a, b = twice(0x0c58a29ec4b0b638), twice(0x7a9a3674194a777a)
	if bytes.Equal(a, b) || xxhash.Sum64(a) != xxhash.Sum64(b) {
		t.Fatal("not an xxh64 collision")
	}
	return a, b
}

// Issue 12, point 3: two files with the same xxh64 (so the same digest
// under the old xxh64t scheme) but different bytes never share a blob.
func TestXXH64CollisionTwoBlobs(t *testing.T) {
	a, b := xxhCollision(t)
	s := openStore(t, t.TempDir(), 1<<30)
	ma := putModel(t, s, "s3://bkt/planted", map[string][]byte{"w": a})
	mb := putModel(t, s, "s3://bkt/victim", map[string][]byte{"w": b})
	for _, c := range []struct {
		m    cache.Model
		want []byte
	}{{ma, a}, {mb, b}} {
		got, err := os.ReadFile(filepath.Join(c.m.Path, "w"))
		if err != nil || !bytes.Equal(got, c.want) {
			t.Fatalf("%s reads %x, want %x (%v)", c.m.Ref, got, c.want, err)
		}
	}
	ra, _ := model.ParseRef("s3://bkt/planted")
	rb, _ := model.ParseRef("s3://bkt/victim")
	fa, _ := s.Manifest(ra, ma.Revision)
	fb, _ := s.Manifest(rb, mb.Revision)
	if fa.Files[0].Digest == fb.Files[0].Digest {
		t.Fatalf("both files are blob %s", fa.Files[0].Digest)
	}
}

// A resumed ingest whose every leaf came from the earlier run (no write in
// this one) is hashed from the file at commit; TestCrashLoop found the file
// closed by then.
func TestResumedIngestHashedAtCommit(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, 1<<30)
	size := 3*model.LeafSize - 5
	data := randBytes(77, size)
	key := cache.IngestKey{Scope: testScope, Origin: "x", ETag: "resumed", Size: int64(size)}
	w, err := s.OpenIngest(key)
	if err != nil {
		t.Fatal(err)
	}
	for i := range model.LeafCount(int64(size)) {
		off, n := model.LeafRange(int64(size), i)
		w.WriteAt(data[off:off+n], off)
		w.MarkLeaf(i, xxhash.Sum64(data[off:off+n]))
	}
	w.Close() // a crash before the commit
	s.Close()
	s = openStore(t, root, 1<<30)
	w, err = s.OpenIngest(key)
	if err != nil {
		t.Fatal(err)
	}
	if p := w.Pending(); len(p) != 0 {
		t.Fatalf("pending after resume: %v", p)
	}
	sum := sha256.Sum256(data)
	if d, err := w.Commit(model.SHA256(sum[:])); err != nil {
		t.Fatalf("commit of a resumed ingest: %s %v", d, err)
	}
}
