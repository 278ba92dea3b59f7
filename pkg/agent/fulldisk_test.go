package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/agent"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// smallDisk mounts a tmpfs of size bytes for a cache and returns its path.
func smallDisk(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("MODELCACHE_REQUIRE") == "1" {
			t.Fatal("needs root to mount a tmpfs (MODELCACHE_REQUIRE=1)")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// diskAgent runs an agent over root with the given capacity against srv.
func diskAgent(t *testing.T, srv *s3test.Server, root string, capacity int64) (*agent.Agent, *cache.Store) {
	t.Helper()
	store, err := cache.Open(root, cache.Options{Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	src := fetch.Source{Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}
	f, err := fetch.New(map[string]fetch.Source{"test": src}, fetch.WithPartSize(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	a := agent.New(store, f, nil, nil)
	t.Cleanup(func() { a.Close(); store.Close() })
	return a, store
}

func ensure(t *testing.T, a *agent.Agent, ref string) (agentapi.Progress, error) {
	t.Helper()
	r, err := model.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	return a.Ensure(context.Background(), r, agentapi.EnsureOptions{Wait: time.Minute})
}

// noIngest fails if a download left anything in ingest/.
func noIngest(t *testing.T, root string) {
	t.Helper()
	left, _ := os.ReadDir(filepath.Join(root, "ingest"))
	if len(left) != 0 {
		t.Fatalf("ingest garbage left after a failed download: %d entries (%s…)", len(left), left[0].Name())
	}
}

// A cache on a small disk: a download that needs room evicts the least
// recently used unpinned model first; one that cannot fit beside the pinned
// model fails at once with a clear error; the pinned model keeps serving.
func TestFullDiskCapacity(t *testing.T) {
	root := smallDisk(t, 64<<20)
	srv := s3test.Start(t)
	srv.CreateBucket(t, "models")
	keep := s3test.RandomBytes(40, 16<<20)
	srv.Put(t, "models", "keep/w.bin", keep)
	srv.Put(t, "models", "old/w.bin", s3test.RandomBytes(41, 16<<20))
	srv.Put(t, "models", "big/w.bin", s3test.RandomBytes(42, 20<<20))
	srv.Put(t, "models", "huge/w.bin", s3test.RandomBytes(43, 40<<20))
	a, store := diskAgent(t, srv, root, 48<<20)

	pk, err := ensure(t, a, "s3://models/keep?source=test")
	if err != nil {
		t.Fatal(err)
	}
	r, _ := model.ParseRef("s3://models/keep?source=test")
	if _, err := a.Pin(r, "csi:pod"); err != nil {
		t.Fatal(err)
	}
	if _, err := ensure(t, a, "s3://models/old?source=test"); err != nil {
		t.Fatal(err)
	}
	// 16 + 16 + 20 MiB is past the capacity: "old" (unpinned, least recent) goes.
	if _, err := ensure(t, a, "s3://models/big?source=test"); err != nil {
		t.Fatalf("big after evicting old: %v", err)
	}
	held := map[string]bool{}
	for _, m := range store.Status().Models {
		held[m.Ref] = true
	}
	if held["s3://models/old?source=test"] || !held["s3://models/keep?source=test"] || !held["s3://models/big?source=test"] {
		t.Fatalf("after the eviction the cache holds %v; want keep and big", held)
	}
	// 40 MiB cannot fit beside the pinned 16 MiB in 48 MiB.
	_, err = ensure(t, a, "s3://models/huge?source=test")
	if !errors.Is(err, cache.ErrNoSpace) || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("huge: %v; want a no-space error that says pinned models hold the room", err)
	}
	noIngest(t, root)
	if got, err := os.ReadFile(filepath.Join(pk.Path, "w.bin")); err != nil || !bytes.Equal(got, keep) {
		t.Fatalf("the pinned model no longer reads right (%v)", err)
	}
}

// A capacity larger than the disk: the disk fills for real in the middle of
// a download. The download fails with a no-space error, leaves no ingest
// behind, and the model already held keeps serving.
func TestFullDiskForReal(t *testing.T) {
	root := smallDisk(t, 48<<20)
	srv := s3test.Start(t)
	srv.CreateBucket(t, "models")
	keep := s3test.RandomBytes(50, 8<<20)
	srv.Put(t, "models", "keep/w.bin", keep)
	for i := range 4 {
		srv.Put(t, "models", fmt.Sprintf("toobig/part-%d.bin", i), s3test.RandomBytes(uint64(51+i), 12<<20))
	}
	a, _ := diskAgent(t, srv, root, 1<<30)
	pk, err := ensure(t, a, "s3://models/keep?source=test")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ensure(t, a, "s3://models/toobig?source=test")
	if err == nil || agent.Classify(err) != "no_space" || p.State != agentapi.StateFailed {
		t.Fatalf("toobig on a full disk: %v (state %s, class %q); want a no-space failure", err, p.State, agent.Classify(err))
	}
	t.Logf("error: %v", err)
	noIngest(t, root)
	if got, err := os.ReadFile(filepath.Join(pk.Path, "w.bin")); err != nil || !bytes.Equal(got, keep) {
		t.Fatalf("the held model no longer reads right (%v)", err)
	}
	// The failed download gave back what it had taken: only the held 8 MiB
	// model (and a little metadata) uses the 48 MiB disk.
	var st unix.Statfs_t
	unix.Statfs(root, &st)
	if free := int64(st.Bavail) * st.Bsize; free < 36<<20 {
		t.Fatalf("only %d MiB free after the failed download", free>>20)
	}
}
