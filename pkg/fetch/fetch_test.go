package fetch_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

func TestListPaginatesNestedPrefixes(t *testing.T) {
	e := newEnv(t)
	objects := map[string][]byte{}
	for i := range 1030 {
		objects[fmt.Sprintf("big/shard-%02d/part %04d ü.bin", i%7, i)] = []byte(fmt.Sprint(i))
	}
	objects["big/empty"] = nil
	objects["big/deep/a/b/c/d/e.json"] = []byte("{}")
	objects["bigger/not-mine"] = []byte("x") // same leading letters, another prefix
	e.putAll(t, "models", objects)

	f := e.fetcher(t)
	m, err := f.List(context.Background(), mustRef(t, "s3://models/big?source=test"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 1032 {
		t.Fatalf("listed %d files, want 1032", len(m.Files))
	}
	for _, fl := range m.Files {
		b, ok := objects["big/"+fl.Path]
		if !ok || fl.Size != int64(len(b)) || fl.ETag == "" || strings.Contains(fl.ETag, `"`) {
			t.Fatalf("bad entry %+v", fl)
		}
	}
	if lists := e.proxy.Requests(); lists < 2 {
		t.Fatalf("%d list requests: pagination not exercised", lists)
	}
	if !slices.IsSortedFunc(m.Files, func(a, b model.File) int { return strings.Compare(a.Path, b.Path) }) {
		t.Fatal("manifest not sorted")
	}
}

func TestFetchWritesExactBytesAndDigests(t *testing.T) {
	e := newEnv(t)
	want := map[string][]byte{
		"weights.bin":          s3test.RandomBytes(1, 100<<20+12345), // 13 leaves, the last one short
		"sub dir/ünï cödé.txt": []byte("hello, wörld"),
		"empty":                nil,
		"a/b/c/config.json":    []byte(`{"layers": 32}`),
		"eight.bin":            s3test.RandomBytes(2, model.LeafSize), // exactly one leaf
	}
	objects := map[string][]byte{}
	var total int64
	for k, b := range want {
		objects["llm/"+k] = b
		total += int64(len(b))
	}
	e.putAll(t, "models", objects)

	f := e.fetcher(t, fetch.WithPartSize(model.LeafSize), fetch.WithConcurrency(4))
	ref := mustRef(t, "s3://models/llm?source=test")
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	var progressed atomic.Int64
	start := time.Now()
	full, st, err := f.Fetch(context.Background(), ref, nil, m, e.store, func(n int64, _ bool) { progressed.Add(n) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fetched %d MiB in %s: %+v", total>>20, time.Since(start).Round(time.Millisecond), st)
	checkTree(t, e.store, full, want)
	if st.BytesFetched != total || st.FilesFetched != len(want) || st.BytesResumed != 0 || st.BytesDeduped != 0 {
		t.Fatalf("stats %+v, model %d bytes", st, total)
	}
	if progressed.Load() != total {
		t.Fatalf("progress reported %d bytes, model is %d", progressed.Load(), total)
	}
	// Every range once, no byte twice, the empty file without a GET.
	for k, n := range e.proxy.GetCounts() {
		if n != 1 {
			t.Errorf("%s requested %d times", k, n)
		}
		if strings.Contains(k, "/llm/empty") {
			t.Errorf("GET for an empty file: %s", k)
		}
	}
	if got := len(e.proxy.GetCounts()); got != 13+1+1+1 {
		t.Errorf("%d GETs, want 16 (13 parts of weights.bin + 3 small files)", got)
	}
	if e.proxy.BytesSent() != total {
		t.Errorf("server sent %d bytes, model is %d", e.proxy.BytesSent(), total)
	}

	// Again: everything is held, nothing is requested.
	before := e.proxy.Requests()
	again, st, err := f.Fetch(context.Background(), ref, nil, m, e.store, nil)
	if err != nil || st.FilesDeduped != len(want) || st.BytesDeduped != total || st.BytesFetched != 0 {
		t.Fatalf("second fetch: %+v %v", st, err)
	}
	if e.proxy.Requests() != before {
		t.Fatal("second fetch talked to S3")
	}
	if !slices.Equal(again.Files, full.Files) {
		t.Fatal("second fetch gave other digests")
	}
}

// TestEveryRangeOnce: one 64 MiB file, 8 MiB parts, 8 workers.
func TestEveryRangeOnce(t *testing.T) {
	e := newEnv(t)
	data := s3test.RandomBytes(3, 64<<20)
	e.srv.Put(t, "models", "m/w.bin", data)
	f := e.fetcher(t, fetch.WithPartSize(8<<20), fetch.WithConcurrency(8))
	full, _ := listAndFetch(t, f, mustRef(t, "s3://models/m?source=test"), e.store)
	checkTree(t, e.store, full, map[string][]byte{"w.bin": data})
	counts := e.proxy.GetCounts()
	if len(counts) != 8 {
		t.Fatalf("%d distinct GETs, want 8: %v", len(counts), counts)
	}
	for i := range 8 {
		k := fmt.Sprintf("GET /models/m/w.bin bytes=%d-%d", i<<23, (i+1)<<23-1)
		if counts[k] != 1 {
			t.Errorf("%s requested %d times", k, counts[k])
		}
	}
}

func TestDuplicateContentInOneModelIsFetchedOnce(t *testing.T) {
	e := newEnv(t)
	same := s3test.RandomBytes(4, 3<<20)
	e.putAll(t, "models", map[string][]byte{"d/a.bin": same, "d/copy/a.bin": same})
	f := e.fetcher(t)
	full, st := listAndFetch(t, f, mustRef(t, "s3://models/d?source=test"), e.store)
	checkTree(t, e.store, full, map[string][]byte{"a.bin": same, "copy/a.bin": same})
	if st.FilesFetched != 1 || st.FilesDeduped != 1 || e.proxy.BytesSent() != int64(len(same)) {
		t.Fatalf("stats %+v, sent %d", st, e.proxy.BytesSent())
	}
}

func TestMaliciousKeysFailTheListing(t *testing.T) {
	for _, c := range []struct{ ref, key string }{
		{"s3://evil/m", "m/a/../../etc/x"},
		{"s3://evil/m", "m//abs"},
		{"s3://evil/m", "m/.."},
		{"s3://evil", "/abs"},
		{"s3://evil", ".."},
		{"s3://evil", "a/../../etc/x"},
	} {
		t.Run(c.key, func(t *testing.T) {
			srv := s3test.StartFake(t)
			srv.CreateBucket(t, "evil")
			srv.Put(t, "evil", "m/good.txt", []byte("fine"))
			srv.Put(t, "evil", c.key, []byte("pwned"))
			root := t.TempDir()
			store, err := cache.Open(root, cache.Options{Capacity: 1 << 30})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			f, err := fetch.New(map[string]fetch.Source{"fake": {Endpoint: srv.Endpoint, PathStyle: true,
				AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}})
			if err != nil {
				t.Fatal(err)
			}
			m, err := f.List(context.Background(), mustRef(t, c.ref+"?source=fake"), nil)
			if !errors.Is(err, model.ErrUnsafeKey) || !strings.Contains(err.Error(), fmt.Sprintf("%q", c.key)) {
				t.Fatalf("got %v, %v; want ErrUnsafeKey naming %q", m, err, c.key)
			}
			// The agent's order is List, then Fetch: a refused listing gives
			// nothing to fetch, so nothing reaches the store.
			for _, d := range []string{"ingest", "blobs/" + model.DigestAlgorithm, "models"} {
				if !dirEmpty(t, filepath.Join(root, d)) {
					t.Fatalf("%s is not empty", d)
				}
			}
		})
	}
}

func TestListSkipsDirectoryMarkersAndServesWholeBuckets(t *testing.T) {
	srv := s3test.StartFake(t)
	srv.CreateBucket(t, "bucket")
	srv.Put(t, "bucket", "m/", nil)
	srv.Put(t, "bucket", "m/dir/", nil)
	srv.Put(t, "bucket", "m/dir/a", []byte("a"))
	srv.Put(t, "bucket", "top", []byte("t"))
	f, err := fetch.New(map[string]fetch.Source{"fake": {Endpoint: srv.Endpoint, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string][]string{
		"s3://bucket/m?source=fake": {"dir/a"},
		"s3://bucket?source=fake":   {"m/dir/a", "top"},
	} {
		m, err := f.List(context.Background(), mustRef(t, ref), nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, fl := range m.Files {
			got = append(got, fl.Path)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: listed %q, want %q", ref, got, want)
		}
	}
}

func TestResumeAfterCancel(t *testing.T) {
	e := newEnv(t)
	want := map[string][]byte{"a.bin": s3test.RandomBytes(5, 40<<20), "b.bin": s3test.RandomBytes(6, 24<<20+5)}
	var total int64
	for k, b := range want {
		e.srv.Put(t, "models", "r/"+k, b)
		total += int64(len(b))
	}
	ref := mustRef(t, "s3://models/r?source=test")
	f := e.fetcher(t, fetch.WithPartSize(16<<20), fetch.WithConcurrency(2))
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}

	// First run: slowed down and cancelled half way.
	e.proxy.SetThrottle(64 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	var done atomic.Int64
	_, st1, err := f.Fetch(ctx, ref, nil, m, e.store, func(n int64, _ bool) {
		if done.Add(n) >= total/2 {
			cancel()
		}
	})

	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	if dirEmpty(t, filepath.Join(e.root, "ingest")) {
		t.Fatal("no ingest left to resume")
	}
	e.proxy.WaitIdle(t, 5*time.Second)
	firstSent := e.proxy.BytesSent()
	t.Logf("first run: %+v, server sent %d of %d", st1, firstSent, total)

	// Second run: finishes from what the first one kept.
	e.proxy.SetThrottle(0)
	var progressed atomic.Int64
	full, st2, err := f.Fetch(context.Background(), ref, nil, m, e.store, func(n int64, _ bool) { progressed.Add(n) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second run: %+v", st2)
	checkTree(t, e.store, full, want)
	if st2.BytesResumed == 0 || st2.BytesFetched >= total || st2.BytesFetched+st2.BytesResumed != total {
		t.Fatalf("second run %+v: want resumed > 0 and fetched+resumed = %d", st2, total)
	}
	if sent := e.proxy.BytesSent() - firstSent; sent != st2.BytesFetched {
		t.Fatalf("second run: server sent %d bytes, stats say %d", sent, st2.BytesFetched)
	}
	if progressed.Load() != total {
		t.Fatalf("second run progress %d, want %d", progressed.Load(), total)
	}
	if !dirEmpty(t, filepath.Join(e.root, "ingest")) {
		t.Fatal("ingests left after a complete fetch")
	}
}

func TestRetriesContinueFromTheLastByte(t *testing.T) {
	e := newEnv(t)
	data := s3test.RandomBytes(7, 16<<20)
	e.srv.Put(t, "models", "t/w.bin", data)
	ref := mustRef(t, "s3://models/t?source=test")
	f := e.fetcher(t, fetch.WithPartSize(16<<20), fetch.WithConcurrency(1))
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Two throttling answers, then a body cut after 3 MiB + 5 bytes (mid
	// buffer, mid leaf), then success.
	e.proxy.FailNext(2, 503, "SlowDown")
	e.proxy.TruncateNext(1, 3<<20+5)
	full, st, err := f.Fetch(context.Background(), ref, nil, m, e.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, e.store, full, map[string][]byte{"w.bin": data})
	if st.Retries != 3 {
		t.Errorf("%d retries, want 3", st.Retries)
	}
	// The cut body was kept: the server sent the object exactly once.
	if e.proxy.BytesSent() != int64(len(data)) {
		t.Errorf("server sent %d bytes for a %d-byte object", e.proxy.BytesSent(), len(data))
	}
	if n := e.proxy.GetCounts()["GET /models/t/w.bin bytes=3145733-16777215"]; n != 1 {
		t.Errorf("remainder not requested from the cut: %v", e.proxy.GetCounts())
	}
}

func TestPersistentServerErrorsGiveUp(t *testing.T) {
	e := newEnv(t)
	// More than one leaf: a one-leaf file is fetched whole or again, so
	// its ingest is not kept (see cache.OpenIngest).
	e.srv.Put(t, "models", "p/w.bin", s3test.RandomBytes(9, model.LeafSize+1))
	ref := mustRef(t, "s3://models/p?source=test")
	f := e.fetcher(t, fetch.WithMaxAttempts(3))
	m, err := f.List(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy.FailNext(100, 500, "InternalError")
	before := e.proxy.Requests()
	_, _, err = f.Fetch(context.Background(), ref, nil, m, e.store, nil)
	if !errors.Is(err, fetch.ErrUnreachable) || !strings.Contains(err.Error(), "after 3 attempts") {
		t.Fatalf("got %v", err)
	}
	if n := e.proxy.Requests() - before; n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
	if dirEmpty(t, filepath.Join(e.root, "ingest")) {
		t.Fatal("the failed ingest was not kept for a resume")
	}
}

// Two models holding the same object content, fetched at once: the second
// waits for the first's ingest instead of failing, then takes its blob.
func TestConcurrentFetchesShareAFile(t *testing.T) {
	e := newEnv(t)
	shared := s3test.RandomBytes(8, 24<<20)
	e.putAll(t, "models", map[string][]byte{"a/w.bin": shared, "b/w.bin": shared, "b/c.json": []byte("{}")})
	f := e.fetcher(t)
	refA, refB := mustRef(t, "s3://models/a?source=test"), mustRef(t, "s3://models/b?source=test")
	mA, err := f.List(context.Background(), refA, nil)
	if err != nil {
		t.Fatal(err)
	}
	mB, err := f.List(context.Background(), refB, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy.SetThrottle(48 << 20)
	started := make(chan struct{})
	var once sync.Once
	errA := make(chan error, 1)
	go func() {
		_, _, err := f.Fetch(context.Background(), refA, nil, mA, e.store, func(int64, bool) { once.Do(func() { close(started) }) })
		errA <- err
	}()
	<-started
	fullB, stB, err := f.Fetch(context.Background(), refB, nil, mB, e.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errA; err != nil {
		t.Fatal(err)
	}
	checkTree(t, e.store, fullB, map[string][]byte{"w.bin": shared, "c.json": []byte("{}")})
	if stB.FilesDeduped != 1 || stB.FilesFetched != 1 {
		t.Errorf("second model: %+v", stB)
	}
	if sent := e.proxy.BytesSent(); sent != int64(len(shared))+2 {
		t.Errorf("server sent %d bytes, want %d", sent, len(shared)+2)
	}
}

// Two models downloading at once share the Fetcher's GETs: never more than
// its concurrency in flight in all, and the second model, started while
// the first holds every GET, still gets its turn and ends first.
func TestConcurrentFetchesShareTheGETs(t *testing.T) {
	e := newEnv(t)
	big := s3test.RandomBytes(21, 10*model.LeafSize)
	small := s3test.RandomBytes(22, 2*model.LeafSize)
	e.putAll(t, "models", map[string][]byte{"big/w.bin": big, "small/w.bin": small})
	const concurrency = 4
	f := e.fetcher(t, fetch.WithConcurrency(concurrency), fetch.WithPartSize(model.LeafSize))
	refBig, refSmall := mustRef(t, "s3://models/big?source=test"), mustRef(t, "s3://models/small?source=test")
	mBig, err := f.List(context.Background(), refBig, nil)
	if err != nil {
		t.Fatal(err)
	}
	mSmall, err := f.List(context.Background(), refSmall, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy.Reset()
	e.proxy.SetDelay(50 * time.Millisecond) // every GET overlaps the others
	started := make(chan struct{})
	var once sync.Once
	type result struct {
		m   *model.Manifest
		err error
	}
	doneBig := make(chan result, 1)
	go func() {
		m, _, err := f.Fetch(context.Background(), refBig, nil, mBig, e.store, func(int64, bool) { once.Do(func() { close(started) }) })
		doneBig <- result{m, err}
	}()
	<-started
	fullSmall, _, err := f.Fetch(context.Background(), refSmall, nil, mSmall, e.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-doneBig:
		t.Errorf("the big model (10 parts) ended before the small one (2 parts) started later: err %v", r.err)
		doneBig <- r
	default:
	}
	r := <-doneBig
	if r.err != nil {
		t.Fatal(r.err)
	}
	checkTree(t, e.store, fullSmall, map[string][]byte{"w.bin": small})
	checkTree(t, e.store, r.m, map[string][]byte{"w.bin": big})
	if peak := e.proxy.PeakGets(); peak > concurrency {
		t.Errorf("%d object GETs at once across two downloads, want at most %d", peak, concurrency)
	}
}

// A server that keeps connections alive gets every part on the same few
// connections (net/http reuses one only if its body was read to EOF before
// Close). versitygw answers "Connection: close" to everything, so the bench
// cannot show a regression here.
func TestPartsReuseConnections(t *testing.T) {
	srv := s3test.StartFake(t)
	srv.CreateBucket(t, "models")
	data := s3test.RandomBytes(3, 5*model.LeafSize+100)
	srv.Put(t, "models", "m/w.bin", data)
	var dials atomic.Int64
	d := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 4,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}}
	f, err := fetch.New(map[string]fetch.Source{"fake": {Endpoint: srv.Endpoint, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}},
		fetch.WithHTTPClient(client), fetch.WithConcurrency(1), fetch.WithPartSize(model.LeafSize))
	if err != nil {
		t.Fatal(err)
	}
	store, err := cache.Open(t.TempDir(), cache.Options{Capacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m, _ := listAndFetch(t, f, mustRef(t, "s3://models/m?source=fake"), store)
	checkTree(t, store, m, map[string][]byte{"w.bin": data})
	// One LIST and 6 ranged GETs, one at a time.
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections dialled for one listing and 6 sequential parts, want 1", n)
	}
}
