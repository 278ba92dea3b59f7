package cache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/model"
)

func openStore(t *testing.T, root string, capacity int64) *cache.Store {
	t.Helper()
	s, err := cache.Open(root, cache.Options{Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// testScope is the scope of every ref of bucket "bkt" without a source or
// endpoint, which most tests use.
const testScope = "aws/bkt"

type ingester interface {
	OpenIngest(cache.IngestKey) (*cache.Ingest, error)
}

// put writes data through an ingest the way the fetcher does: leaf by leaf,
// hashing while writing.
func put(t *testing.T, into ingester, etag string, data []byte) model.Digest {
	t.Helper()
	w, err := into.OpenIngest(cache.IngestKey{Scope: testScope, Origin: "test/" + etag, ETag: etag, Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range w.Pending() {
		off, n := model.LeafRange(int64(len(data)), i)
		leaf := data[off : off+n]
		if _, err := w.WriteAt(leaf, off); err != nil {
			t.Fatal(err)
		}
		if err := w.MarkLeaf(i, xxhash.Sum64(leaf)); err != nil {
			t.Fatal(err)
		}
	}
	d, err := w.Commit("")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func manifest(t *testing.T, ref string, files map[string][]byte, digests map[string]model.Digest) *model.Manifest {
	t.Helper()
	r, err := model.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	var fs []model.File
	for p, b := range files {
		fs = append(fs, model.File{Path: p, Size: int64(len(b)), ETag: fmt.Sprintf("%x", xxhash.Sum64(b)), Digest: digests[p]})
	}
	m, err := model.NewManifest(r, fs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// putModel stores every file and the manifest.
func putModel(t *testing.T, s *cache.Store, ref string, files map[string][]byte) cache.Model {
	t.Helper()
	var total int64
	for _, b := range files {
		total += int64(len(b))
	}
	res, err := s.Reserve(total)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	digests := map[string]model.Digest{}
	for p, b := range files {
		digests[p] = put(t, res, fmt.Sprintf("%x", xxhash.Sum64(b)), b)
	}
	m, err := s.PutModel(manifest(t, ref, files, digests))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDigestMatchesDigestReader(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<30)
	for _, n := range []int{0, 1, model.LeafSize, model.LeafSize + 7, 3*model.LeafSize - 1} {
		data := randBytes(uint64(n), n)
		got := put(t, s, fmt.Sprint("e", n), data)
		want, err := model.DigestReader(bytes.NewReader(data), int64(n), nil)
		if err != nil || got != want {
			t.Fatalf("size %d: digest %s, DigestReader %s (%v)", n, got, want, err)
		}
		if !s.HasBlob(got) {
			t.Fatalf("size %d: blob not held after commit", n)
		}
	}
}

func TestModelTreeAndDedupAcrossRevisions(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, 1<<30)
	shared := randBytes(1, 2*model.LeafSize+100)
	v1 := map[string][]byte{"weights/a.bin": shared, "config.json": []byte(`{"v":1}`), "empty": nil}
	v2 := map[string][]byte{"weights/a.bin": shared, "config.json": []byte(`{"v":2}`), "empty": nil}
	m1 := putModel(t, s, "s3://bkt/m", v1)
	m2 := putModel(t, s, "s3://bkt/m", v2)
	if m1.Revision == m2.Revision || m1.Path == m2.Path {
		t.Fatalf("revisions not distinct: %+v %+v", m1, m2)
	}
	for _, m := range []cache.Model{m1, m2} {
		got, err := os.ReadFile(filepath.Join(m.Path, "weights/a.bin"))
		if err != nil || !bytes.Equal(got, shared) {
			t.Fatalf("%s: weights differ (%v)", m.Path, err)
		}
		fi, _ := os.Stat(filepath.Join(m.Path, "weights/a.bin"))
		if fi.Mode().Perm() != 0o444 {
			t.Fatalf("mode %v, want 0444", fi.Mode())
		}
	}
	// Shared bytes are stored once: the blob and the two trees are one inode.
	a, _ := os.Stat(filepath.Join(m1.Path, "weights/a.bin"))
	b, _ := os.Stat(filepath.Join(m2.Path, "weights/a.bin"))
	if !os.SameFile(a, b) || a.Sys().(*syscall.Stat_t).Nlink != 3 {
		t.Fatalf("shared file not deduplicated: same=%v nlink=%d", os.SameFile(a, b), a.Sys().(*syscall.Stat_t).Nlink)
	}
	st := s.Status()
	if st.SavedBytes != int64(len(shared)) {
		t.Fatalf("saved %d, want %d", st.SavedBytes, len(shared))
	}
	if st.UsedBytes != int64(len(shared)+2*len(`{"v":1}`)) {
		t.Fatalf("used %d", st.UsedBytes)
	}
	if len(st.Models) != 2 || !st.Models[1].Current || st.Models[0].Current {
		t.Fatalf("models %+v", st.Models)
	}
	// Unpinned lookup resolves to the newest revision; a pinned revision to itself.
	ref, _ := model.ParseRef("s3://bkt/m")
	if got, _ := s.Lookup(ref); got.Revision != m2.Revision {
		t.Fatalf("lookup %s, want %s", got.Revision, m2.Revision)
	}
	ref.Revision = m1.Revision
	if got, err := s.Lookup(ref); err != nil || got.Revision != m1.Revision {
		t.Fatalf("lookup pinned revision: %v %v", got, err)
	}
}

func TestResumeKeepsVerifiedLeavesOnly(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, 1<<30)
	data := randBytes(7, 4*model.LeafSize)
	key := cache.IngestKey{Origin: "b/k", ETag: "e1", Size: int64(len(data))}
	w, err := s.OpenIngest(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenIngest(key); !errors.Is(err, cache.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	for _, i := range []int{0, 2} {
		off, n := model.LeafRange(key.Size, i)
		w.WriteAt(data[off:off+n], off)
		w.MarkLeaf(i, xxhash.Sum64(data[off:off+n]))
	}
	// Leaf 3 is journalled with a wrong hash, as if its bytes were lost.
	off, n := model.LeafRange(key.Size, 3)
	w.WriteAt(data[off:off+n], off)
	w.MarkLeaf(3, 42)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openStore(t, root, 1<<30)
	w, err = s.OpenIngest(key)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(w.Pending()); got != "[1 3]" {
		t.Fatalf("pending after resume %s, want [1 3]", got)
	}
	if w.HeldBytes() != 2*model.LeafSize {
		t.Fatalf("held %d", w.HeldBytes())
	}
	w.Abort()
	if d := put(t, s, "e1", data); !s.HasBlob(d) {
		t.Fatal("blob missing")
	}
	if left, _ := os.ReadDir(filepath.Join(root, "ingest")); len(left) != 0 {
		t.Fatalf("ingest garbage left: %v", left)
	}
}

func TestCommitRejectsIncompleteOrWrongDigest(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<30)
	data := randBytes(3, model.LeafSize+1)
	w, _ := s.OpenIngest(cache.IngestKey{Origin: "x", ETag: "e", Size: int64(len(data))})
	w.WriteAt(data[:model.LeafSize], 0)
	w.MarkLeaf(0, xxhash.Sum64(data[:model.LeafSize]))
	if _, err := w.Commit(""); err == nil || !strings.Contains(err.Error(), "not written") {
		t.Fatalf("commit of incomplete ingest: %v", err)
	}
	w, _ = s.OpenIngest(cache.IngestKey{Origin: "y", ETag: "f", Size: 3})
	w.WriteAt([]byte("abc"), 0)
	w.MarkLeaf(0, xxhash.Sum64([]byte("abc")))
	if _, err := w.Commit("sha256:0000000000000000000000000000000000000000000000000000000000000000"); !errors.Is(err, cache.ErrCorrupt) {
		t.Fatalf("commit with wrong expected digest: %v", err)
	}
	if st := s.Status(); st.UsedBytes != 0 {
		t.Fatalf("used %d after failed commits", st.UsedBytes)
	}
}

func TestCapacityEvictsLRUUnpinned(t *testing.T) {
	now := time.Unix(1000, 0)
	s, err := cache.Open(t.TempDir(), cache.Options{Capacity: 100 << 10, HighWatermark: 0.9, LowWatermark: 0.5,
		Now: func() time.Time { now = now.Add(time.Second); return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	file := func(seed uint64) map[string][]byte { return map[string][]byte{"w": randBytes(seed, 40<<10)} }
	a := putModel(t, s, "s3://bkt/a", file(1))
	putModel(t, s, "s3://bkt/b", file(2))
	if err := s.Pin(a.Ref, a.Revision, "vol-1"); err != nil {
		t.Fatal(err)
	}
	// c needs 40 KiB: 80+40 > 90 KiB high mark, so evict toward 50 KiB: b goes, a is pinned.
	putModel(t, s, "s3://bkt/c", file(3))
	var refs []string
	for _, m := range s.Status().Models {
		refs = append(refs, m.Ref)
	}
	if got := strings.Join(refs, " "); got != "s3://bkt/a s3://bkt/c" {
		t.Fatalf("held after eviction: %s", got)
	}
	// Larger than the capacity: clear error, no reservation left behind.
	if _, err := s.Reserve(200 << 10); !errors.Is(err, cache.ErrTooLarge) || !strings.Contains(err.Error(), "capacity") {
		t.Fatalf("too large: %v", err)
	}
	// Only pinned content left to evict: no space.
	if err := s.Pin(a.Ref, a.Revision, "vol-1"); err != nil {
		t.Fatal(err)
	}
	ref, _ := model.ParseRef("s3://bkt/c")
	cm, _ := s.Lookup(ref)
	s.Pin(cm.Ref, cm.Revision, "vol-2")
	if _, err := s.Reserve(60 << 10); !errors.Is(err, cache.ErrNoSpace) {
		t.Fatalf("reserve past pinned content: %v", err)
	}
	if got := s.Status().ReservedBytes; got != 0 {
		t.Fatalf("reserved %d after failures", got)
	}
	// Evict refuses pinned revisions and names the holder.
	if _, err := s.Evict(a.Ref, ""); !errors.Is(err, cache.ErrPinned) || !strings.Contains(err.Error(), "vol-1") {
		t.Fatalf("evict pinned: %v", err)
	}
	s.Unpin(a.Ref, "", "vol-1")
	if ev, err := s.Evict(a.Ref, ""); err != nil || len(ev) != 1 {
		t.Fatalf("evict unpinned: %v %v", ev, err)
	}
	if _, err := os.Stat(a.Path); !os.IsNotExist(err) {
		t.Fatalf("evicted tree still there: %v", err)
	}
}

func TestPinsSurviveRestartAndRecoveryCleansUp(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, 1<<30)
	m := putModel(t, s, "s3://bkt/m", map[string][]byte{"a": []byte("hello"), "d/b": []byte("world")})
	if err := s.Pin(m.Ref, m.Revision, "vol-9"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Simulate a crash mid-build and mid-eviction.
	half := filepath.Join(root, "models", m.Ref.ID(), ".tmp-deadbeef-1")
	os.MkdirAll(filepath.Join(half, "x"), 0o755)
	os.MkdirAll(filepath.Join(root, "trash", "old"), 0o755)
	os.WriteFile(filepath.Join(root, "state.json.tmp-1"), []byte("{"), 0o644)

	s = openStore(t, root, 1<<30)
	st := s.Status()
	if len(st.Models) != 1 || fmt.Sprint(st.Models[0].Pins) != "[vol-9]" {
		t.Fatalf("after restart: %+v", st.Models)
	}
	for _, p := range []string{half, filepath.Join(root, "trash", "old"), filepath.Join(root, "state.json.tmp-1")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s survived recovery", p)
		}
	}
	// A second agent on the same directory is refused.
	if _, err := cache.Open(root, cache.Options{}); !errors.Is(err, cache.ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	// The etag index was rebuilt: the content is found without a download.
	if _, ok := s.LookupETag(testScope, fmt.Sprintf("%x", xxhash.Sum64([]byte("hello"))), 5); !ok {
		t.Fatal("etag index lost after restart")
	}
}

func TestVerifyQuarantinesCorruptBlob(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, 1<<30)
	good := putModel(t, s, "s3://bkt/good", map[string][]byte{"a": []byte("fine content")})
	bad := putModel(t, s, "s3://bkt/bad", map[string][]byte{"a": []byte("will rot")})
	blob := filepath.Join(bad.Path, "a")
	os.Chmod(blob, 0o644)
	os.WriteFile(blob, []byte("will ROT"), 0o644)
	rep, err := s.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Blobs != 2 || len(rep.Corrupt) != 1 || len(rep.Corrupt[0].Evicted) != 1 {
		t.Fatalf("report %+v", rep)
	}
	if _, err := os.Stat(bad.Path); !os.IsNotExist(err) {
		t.Fatal("revision with a corrupt blob still visible")
	}
	if _, err := os.Stat(filepath.Join(good.Path, "a")); err != nil {
		t.Fatal(err)
	}
	if q, _ := os.ReadDir(filepath.Join(root, "quarantine")); len(q) != 1 {
		t.Fatalf("quarantine holds %d", len(q))
	}
}

// crashCopy copies a live store's directory, as a kill -9 would leave it
// (the page cache keeps every write), for a second store to open.
func crashCopy(t *testing.T, root string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", root, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	os.Remove(filepath.Join(dst, "lock"))
	return dst
}

func pinsAfterCrash(t *testing.T, root string, tamper func(dir string)) string {
	t.Helper()
	dir := crashCopy(t, root)
	if tamper != nil {
		tamper(dir)
	}
	c := openStore(t, dir, 1<<30)
	defer c.Close()
	return fmt.Sprint(c.Status().Models[0].Pins)
}

func TestPinLogReplaysOverState(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, 1<<30)
	m := putModel(t, s, "s3://bkt/m", map[string][]byte{"a": []byte("pinned")})
	if err := s.Pin(m.Ref, m.Revision, "vol-1"); err != nil {
		t.Fatal(err)
	}
	// Killed right after the pin: state.json has no pins, the log has it.
	if got := pinsAfterCrash(t, root, nil); got != "[vol-1]" {
		t.Fatalf("pins after a crash = %s, want [vol-1]", got)
	}
	s.Unpin(m.Ref, m.Revision, "vol-1")
	s.Pin(m.Ref, m.Revision, "vol-2")
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.Pin(m.Ref, m.Revision, "vol-3")
	// The flush put vol-2 in state.json; the log, replayed over it, still
	// holds every op since, and a torn tail (power loss) is skipped.
	torn := func(dir string) {
		f, _ := os.OpenFile(filepath.Join(dir, "pins.log"), os.O_WRONLY|os.O_APPEND, 0)
		f.WriteString(`{"pin":true,"id":"`)
		f.Close()
	}
	if got := pinsAfterCrash(t, root, torn); got != "[vol-2 vol-3]" {
		t.Fatalf("pins after a crash = %s, want [vol-2 vol-3]", got)
	}
	// A lost log (power loss) falls back to state.json as of the flush.
	lost := func(dir string) { os.Remove(filepath.Join(dir, "pins.log")) }
	if got := pinsAfterCrash(t, root, lost); got != "[vol-2]" {
		t.Fatalf("pins without the log = %s, want [vol-2]", got)
	}
	// A durable save empties the log.
	putModel(t, s, "s3://bkt/other", map[string][]byte{"b": []byte("x")})
	if st, err := os.Stat(filepath.Join(root, "pins.log")); err != nil || st.Size() != 0 {
		t.Fatalf("pin log after a state save: %v, %v", st, err)
	}
	s.Close()
	s = openStore(t, root, 1<<30)
	defer s.Close()
	for _, ms := range s.Status().Models {
		if ms.Ref == m.Ref.String() && fmt.Sprint(ms.Pins) != "[vol-2 vol-3]" {
			t.Fatalf("pins after a clean restart = %v", ms.Pins)
		}
	}
}

// The fetcher writes each leaf in pieces of any size (a short read splits
// one), parts in any order, and starts writeback as parts finish. Every mix
// must give the exact bytes, on a disk filesystem and on tmpfs (where
// sync_file_range does nothing).
func TestWritesInPiecesAndWriteback(t *testing.T) {
	roots := map[string]string{"tempdir": t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "modelcache-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			roots["tmpfs"] = d
		}
	}
	for name, root := range roots {
		t.Run(name, func(t *testing.T) {
			s := openStore(t, root, 1<<30)
			size := 3*model.LeafSize + 12345
			data := randBytes(7, size)
			w, err := s.OpenIngest(cache.IngestKey{Origin: "test/pieces", ETag: "pieces", Size: int64(size)})
			if err != nil {
				t.Fatal(err)
			}
			// Leaves in reverse order, each cut in its own pattern.
			for i := model.LeafCount(int64(size)) - 1; i >= 0; i-- {
				off, n := model.LeafRange(int64(size), i)
				leaf := data[off : off+n]
				pieces := [][]int{{256 << 10}, {1 << 20, 1000, 1 << 20, 77}, {8192, 4095}}[i%3]
				for pos, k := 0, 0; pos < len(leaf); k++ {
					m := min(pieces[k%len(pieces)], len(leaf)-pos)
					if _, err := w.WriteAt(leaf[pos:pos+m], off+int64(pos)); err != nil {
						t.Fatal(err)
					}
					pos += m
				}
				if err := w.StartWriteback(off, n); err != nil {
					t.Fatal(err)
				}
				if err := w.MarkLeaf(i, xxhash.Sum64(leaf)); err != nil {
					t.Fatal(err)
				}
			}
			want, err := model.DigestReader(bytes.NewReader(data), int64(size), nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := w.Commit(want)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(root, "blobs", got.Algorithm(), got.Hex()))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, data) {
				t.Fatalf("committed blob differs from the bytes written (%d vs %d bytes)", len(b), len(data))
			}
		})
	}
}
