package cache_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/modelcache/modelcache/pkg/cache"
)

// A scrub at a capped rate reads no faster than the cap: it must not take
// the disk from the models being served. (A lower bound only, so a slow
// machine cannot make it fail.)
func TestVerifyWithRateIsPaced(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<30)
	putModel(t, s, "s3://bkt/paced", map[string][]byte{"w": bytes.Repeat([]byte("x"), 6<<20)})
	start := time.Now()
	rep, err := s.Verify(context.Background(), cache.WithRate(4<<20))
	if err != nil || rep.Blobs != 1 || len(rep.Corrupt) != 0 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	// 6 MiB at 4 MiB/s with a 1 MiB burst: at least 1.25 s.
	if d := time.Since(start); d < 1200*time.Millisecond {
		t.Fatalf("6 MiB verified in %s at a 4 MiB/s cap", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Verify(ctx, cache.WithRate(1<<20)); err == nil {
		t.Fatal("a paced verify ignored its context")
	}
	// Stopping is not corruption: the blob is still there and sound.
	if rep, err := s.Verify(context.Background()); err != nil || rep.Blobs != 1 || len(rep.Corrupt) != 0 {
		t.Fatalf("after a stopped verify: %+v %v", rep, err)
	}
}
