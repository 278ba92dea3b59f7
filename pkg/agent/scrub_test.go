package agent_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/csi/mounter"
	"github.com/modelcache/modelcache/pkg/model"
)

// Bit rot in a blob a pod has mounted: the scrub finds it, quarantines the
// blob, fetches the file again and swaps it in. A reader that keeps opening
// the file through a real read-only bind mount sees the rotten bytes or the
// good ones, never anything else, and the good ones once the repair is done.
func TestScrubRepairsBitRotUnderAMountedReader(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("MODELCACHE_REQUIRE") == "1" {
			t.Fatal("needs root for the bind mount (MODELCACHE_REQUIRE=1)")
		}
		t.Skip("needs root for the bind mount")
	}
	e := newEnv(t, 1<<30)
	e.srv.CreateBucket(t, "models")
	good := s3test.RandomBytes(11, 20<<20)
	e.srv.Put(t, "models", "rot/weights.bin", good)
	e.srv.Put(t, "models", "rot/config.json", []byte(`{"layers": 2}`))
	ref, err := model.ParseRef("s3://models/rot?source=test")
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.agent.Ensure(context.Background(), ref, agentapi.EnsureOptions{Wait: time.Minute})
	if err != nil || p.State != agentapi.StateReady {
		t.Fatalf("ensure: %v %+v", err, p)
	}
	if _, err := e.agent.Pin(ref, "csi:pod-a"); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "mnt")
	os.MkdirAll(target, 0o755)
	mnt := mounter.New()
	if err := mnt.BindReadOnly(p.Path, target); err != nil {
		t.Fatal(err)
	}
	defer mnt.Unmount(target)

	// Flip one byte in the middle of the blob (the tree file is the same inode).
	rotten := bytes.Clone(good)
	rotten[12<<20] ^= 0x40
	f, err := os.OpenFile(filepath.Join(p.Path, "weights.bin"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(rotten[12<<20:12<<20+1], 12<<20)
	f.Sync()
	f.Close()

	var bad, reads atomic.Int64
	var sawGood, sawRotten atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(filepath.Join(target, "weights.bin"))
			reads.Add(1)
			switch {
			case err != nil:
				bad.Add(1)
				t.Errorf("read through the mount: %v", err)
			case bytes.Equal(b, good):
				sawGood.Store(true)
			case bytes.Equal(b, rotten):
				sawRotten.Store(true)
			default:
				bad.Add(1)
			}
		}
	})

	e.proxy.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.agent.Scrub(ctx, 50*time.Millisecond, 512<<20)
	deadline := time.Now().Add(30 * time.Second)
	for !sawGood.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	close(stop)
	wg.Wait()
	if !sawRotten.Load() || !sawGood.Load() {
		t.Fatalf("reader saw rotten=%t good=%t in %d reads; want the rot, then the repair", sawRotten.Load(), sawGood.Load(), reads.Load())
	}
	if bad.Load() != 0 {
		t.Fatalf("%d of %d reads through the mount were neither the rotten nor the good file", bad.Load(), reads.Load())
	}
	got, err := os.ReadFile(filepath.Join(target, "weights.bin"))
	if err != nil || !bytes.Equal(got, good) {
		t.Fatalf("after the repair the mount reads %d bytes (%v), not the good file", len(got), err)
	}
	// Only the broken file was fetched again; the rotten copy is kept aside.
	if sent := e.proxy.BytesSent(); sent != int64(len(good)) {
		t.Errorf("repair fetched %d bytes, want %d (one file)", sent, len(good))
	}
	if q, _ := os.ReadDir(filepath.Join(e.root, "quarantine")); len(q) != 1 {
		t.Errorf("quarantine holds %d blobs, want 1", len(q))
	}
	rep, err := e.agent.Verify(context.Background())
	if err != nil || len(rep.Corrupt) != 0 || rep.Blobs != 2 {
		t.Fatalf("verify after repair: %+v %v", rep, err)
	}
	st := e.agent.Status()
	if len(st.Models) != 1 || len(st.Models[0].Pins) != 1 {
		t.Fatalf("the pinned model must stay, pinned: %+v", st.Models)
	}
	t.Logf("%d reads through the mount during the scrub", reads.Load())
}
