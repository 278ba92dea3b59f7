package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/internal/testenv"
	"github.com/modelcache/modelcache/pkg/agent"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// TestWarmPageCache: a fresh download is already in the page cache and the
// warm-up finds it there; once the kernel has dropped the pages, a warm-up
// on a hit reads them back in, and leaves no file open.
func TestWarmPageCache(t *testing.T) {
	e := newEnv(t, 1<<30)
	e.srv.CreateBucket(t, "models")
	weights := s3test.RandomBytes(7, 20<<20+123)
	e.srv.Put(t, "models", "w/weights.bin", weights)
	e.srv.Put(t, "models", "w/tok/tokenizer.json", []byte(`{"v":1}`))
	e.srv.Put(t, "models", "w/empty", nil)
	ref := "s3://models/w?source=test"
	size := int64(len(weights) + 7)
	ctx := context.Background()

	p, err := e.client.Ensure(ctx, ref, agentapi.EnsureOptions{Wait: time.Minute, WarmPageCache: true}, nil)
	if err != nil || p.State != agentapi.StateReady {
		t.Fatalf("ensure: %+v %v", p, err)
	}
	w := p.Warm
	if w == nil || w.Error != "" || w.Files != 3 || w.Bytes != size || w.ResidentBytes+w.ReadBytes != size || w.SkippedBytes != 0 {
		t.Fatalf("warm-up after download: %+v", w)
	}

	if !dropPages(t, p.Path) {
		t.Skip("the cache's filesystem keeps every page in memory (tmpfs?): nothing to warm")
	}
	p, err = e.client.Ensure(ctx, ref, agentapi.EnsureOptions{WarmPageCache: true}, nil)
	if err != nil || !p.Hit {
		t.Fatalf("second ensure: %+v %v", p, err)
	}
	w = p.Warm
	if w == nil || w.Error != "" || w.Bytes != size || w.ReadBytes < int64(len(weights))/2 || w.ResidentBytes+w.ReadBytes != size {
		t.Fatalf("warm-up of dropped pages: %+v", w)
	}
	if r := resident(t, p.Path); r != size {
		t.Fatalf("after the warm-up %d of %d bytes are in the page cache", r, size)
	}
	got, err := os.ReadFile(filepath.Join(p.Path, "weights.bin"))
	if err != nil || !bytes.Equal(got, weights) {
		t.Fatalf("weights differ after the warm-up (%v)", err)
	}
	// A hint must not pin files: nothing under the tree is left open.
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(l, p.Path) {
			t.Errorf("warm-up left %s open", l)
		}
	}
	// Without the option nothing is warmed or reported.
	if p, err := e.client.Ensure(ctx, ref, agentapi.EnsureOptions{}, nil); err != nil || p.Warm != nil {
		t.Fatalf("plain ensure: %+v %v", p, err)
	}
}

// TestWarmPageCacheAfterBackgroundDownload: a caller that does not wait
// still gets its warm-up once the download ends.
func TestWarmPageCacheAfterBackgroundDownload(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "models")
	srv.Put(t, "models", "b/weights.bin", s3test.RandomBytes(8, 9<<20))
	store, err := cache.Open(t.TempDir(), cache.Options{Capacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	// Slowed to ~0.5 s, so the second ensure below surely joins the download.
	proxy := s3test.NewCountingProxy(t, srv.Endpoint)
	proxy.SetThrottle(16 << 20)
	f, err := fetch.New(map[string]fetch.Source{"test": {Endpoint: proxy.URL(), Region: srv.Region, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.Buffer{}
	a := agent.New(store, f, slog.New(slog.NewTextHandler(logs, nil)), nil)
	t.Cleanup(func() { a.Close(); store.Close() })
	ref, err := model.ParseRef("s3://models/b?source=test")
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Ensure(context.Background(), ref, agentapi.EnsureOptions{WarmPageCache: true})
	if err != nil || p.State == agentapi.StateReady || p.Warm != nil {
		t.Fatalf("ensure without wait: %+v %v", p, err)
	}
	// A second caller joins the download and waits: it gets the report of
	// the same, single warm-up (the prefetch controller asks like this).
	p, err = a.Ensure(context.Background(), ref, agentapi.EnsureOptions{WarmPageCache: true, Wait: time.Minute})
	if err != nil || p.State != agentapi.StateReady || p.Warm == nil || p.Warm.Bytes != 9<<20 {
		t.Fatalf("ensure with wait: %+v %v", p, err)
	}
	if l := logs.String(); strings.Count(l, "page cache warm-up") != 1 || !strings.Contains(l, "bytes=9437184") || strings.Contains(l, "level=WARN") {
		t.Fatalf("want one warm-up in the log:\n%s", l)
	}
}

// dropPages asks the kernel to drop the tree's clean pages (no root needed)
// and reports whether it did.
func dropPages(t *testing.T, root string) bool {
	t.Helper()
	walkFiles(t, root, func(f *os.File, size int64) {
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
	})
	return resident(t, root) == 0
}

// resident counts the tree's bytes in the page cache (mincore, page-rounded
// down to the file sizes).
func resident(t *testing.T, root string) int64 {
	t.Helper()
	var n int64
	page := int64(os.Getpagesize())
	walkFiles(t, root, func(f *os.File, size int64) {
		mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(mem)
		vec := make([]byte, (size+page-1)/page)
		if err := agent.Mincore(mem, vec); err != nil {
			t.Fatal(err)
		}
		for i, v := range vec {
			if v&1 != 0 {
				n += min(page, size-int64(i)*page)
			}
		}
	})
	return n
}

func walkFiles(t *testing.T, root string, fn func(f *os.File, size int64)) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || st.Size() == 0 {
			return err
		}
		fn(f, st.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWarmPageCacheBudget: what does not fit the memory budget stays on
// disk, in file order, and is reported as skipped.
func TestWarmPageCacheBudget(t *testing.T) {
	dir := t.TempDir()
	for i, n := range []int{3 << 20, 5 << 20, 2 << 20} {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("shard-%d", i)), s3test.RandomBytes(uint64(i), n), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	unix.Sync() // only clean pages can be dropped
	if !dropPages(t, dir) {
		t.Skip("the filesystem keeps every page in memory (tmpfs?)")
	}
	rep, err := agent.WarmTree(dir, 6<<20)
	if err != nil {
		t.Fatal(err)
	}
	// shard-0 (3 MiB) fits; shard-1 (5 MiB, read in chunks of 4 MiB) does
	// not, and shard-2 (2 MiB) after it is not read though it would fit.
	if rep.Files != 3 || rep.Bytes != 10<<20 || rep.ReadBytes != 3<<20 || rep.SkippedBytes != 7<<20 {
		t.Fatalf("warm-up with a 6 MiB budget: %+v", rep)
	}
	if r := resident(t, filepath.Join(dir, "shard-0")); r != 3<<20 {
		t.Fatalf("first shard: %d bytes resident, want all", r)
	}
	if r := resident(t, filepath.Join(dir, "shard-2")); r != 0 {
		t.Fatalf("last shard: %d bytes resident, want none", r)
	}
}
