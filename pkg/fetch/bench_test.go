package fetch_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
)

// BenchmarkFetch downloads a 1 GiB model (4 × 256 MiB) from versitygw
// directly (no proxy) into a fresh store per iteration, with the defaults.
// Compare with rclone and the SDK downloader on the same machine (make bench).
func BenchmarkFetch(b *testing.B) {
	srv := s3test.Start(b)
	srv.CreateBucket(b, "models")
	const n, size = 4, 256 << 20
	for i := range n {
		srv.PutReader(b, "models", fmt.Sprintf("bench/shard-%d.bin", i), s3test.RandomReader(uint64(i), size), size)
	}
	f, err := fetch.New(map[string]fetch.Source{"s": {Endpoint: srv.Endpoint, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}})
	if err != nil {
		b.Fatal(err)
	}
	ref := mustRef(b, "s3://models/bench?source=s")
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(n * size)
	for b.Loop() {
		b.StopTimer()
		store, err := cache.Open(b.TempDir(), cache.Options{Capacity: 1 << 34})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, _, err := f.Fetch(context.Background(), ref, nil, m, store, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		store.Close()
		b.StartTimer()
	}
}
