package fetch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// stormSource is the model as it is on the server: what every path holds
// now, and the digest of every version ever uploaded.
type stormSource struct {
	mu       sync.Mutex
	data     map[string][]byte // path in the model → content
	etag     map[string]string // path → ETag of that content
	versions map[string]model.Digest
	sizes    map[string]int64 // ETag → size
	next     uint64           // seed of the next replacement's content
}

func (s *stormSource) record(path, etag string, b []byte) error {
	d, err := model.DigestReader(bytes.NewReader(b), int64(len(b)), nil)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[path], s.etag[path] = b, strings.Trim(etag, `"`)
	s.versions[s.etag[path]], s.sizes[s.etag[path]] = d, int64(len(b))
	return nil
}

func (s *stormSource) snapshot() (map[string][]byte, map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, etag := map[string][]byte{}, map[string]string{}
	for p, b := range s.data {
		data[p], etag[p] = b, s.etag[p]
	}
	return data, etag
}

// TestFaultStorm fetches a model of big (multi-part), middling and small
// files over and over through a proxy that breaks a good share of the
// object GETs in every way s3test.Faults knows (5xx bursts, SlowDown, resets
// and clean closes mid-body, stalls before and inside the body, lying
// Content-Length both ways) and now and then rewrites a file on the server
// half way through its download. Every fetch must either give exactly the
// bytes listed, or fail with a classified error after a bounded number of
// requests; a failed fetch's store is fetched into again, so resumes run
// under faults too. Afterwards every blob of every store is re-hashed and
// must be the digest of a version that was really uploaded: no mix of old
// and new bytes, no short part taken as whole. MODELCACHE_FAULT_SEED=N
// replays a seed's mix of faults.
func TestFaultStorm(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MODELCACHE_FAULT_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("MODELCACHE_FAULT_SEED: %v", err)
		}
	}
	t.Logf("seed %d (MODELCACHE_FAULT_SEED=%d replays this mix of faults)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	start := time.Now()

	e := newEnv(t)
	faults, err := s3test.NewFaults(e.srv.Endpoint, s3test.FaultConfig{Seed: seed, MaxBurst: 6, StallFor: 5 * time.Second,
		Prob: map[s3test.Fault]float64{
			s3test.Fault5xx: 0.04, s3test.FaultSlowDown: 0.05, s3test.FaultReset: 0.05, s3test.FaultTruncate: 0.05,
			s3test.FaultStall: 0.03, s3test.FaultLongLength: 0.05, s3test.FaultShortLength: 0.05,
		}})
	if err != nil {
		t.Fatal(err)
	}
	faults.Install(e.proxy)

	sizes := map[string]int{
		"model-00001-of-00002.safetensors": 3*model.LeafSize + 77, // 4 parts, the last one tiny
		"model-00002-of-00002.safetensors": model.LeafSize + 4097, // 2 parts
		"embeddings.bin":                   5 << 20,
		"tokenizer.json":                   300 << 10,
		"vocab.txt":                        77 << 10,
		"README.md":                        9000,
		"config.json":                      1234,
		"generation_config.json":           120,
		"empty":                            0,
	}
	src := &stormSource{data: map[string][]byte{}, etag: map[string]string{}, versions: map[string]model.Digest{},
		sizes: map[string]int64{}, next: 1000}
	objects := map[string][]byte{}
	var paths []string
	for p, n := range sizes {
		objects["storm/"+p] = s3test.RandomBytes(uint64(len(paths)+1), n)
		paths = append(paths, p)
	}
	e.putAll(t, "models", objects)
	for p := range sizes {
		info, err := e.srv.Client.StatObject(context.Background(), "models", "storm/"+p, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := src.record(p, info.ETag, objects["storm/"+p]); err != nil {
			t.Fatal(err)
		}
	}
	var totalParts int64
	for _, n := range sizes {
		totalParts += (int64(n) + model.LeafSize - 1) / model.LeafSize
	}

	// replace rewrites a file on the server (called by the proxy, mid-body):
	// usually the same size, so only the ETag tells the versions apart.
	var replaced struct {
		sync.Mutex
		armed        bool   // ReplaceNext was called and has not fired yet
		key, oldETag string // what was rewritten in this round, if anything
	}
	replace := func(bucket, key string) error {
		p := strings.TrimPrefix(key, "storm/")
		src.mu.Lock()
		src.next++
		n, seed, old := len(src.data[p]), src.next, src.etag[p]
		src.mu.Unlock()
		if seed%4 == 0 {
			n += 1000
		}
		b := s3test.RandomBytes(seed, n)
		info, err := e.srv.Client.PutObject(context.Background(), bucket, key, bytes.NewReader(b), int64(n),
			minio.PutObjectOptions{DisableMultipart: true, ContentType: "application/octet-stream"})
		if err != nil {
			return err
		}
		replaced.Lock()
		replaced.armed, replaced.key, replaced.oldETag = false, key, old
		replaced.Unlock()
		return src.record(p, info.ETag, b)
	}

	ref := mustRef(t, "s3://models/storm?source=test")
	f := e.fetcher(t, fetch.WithPartSize(model.LeafSize), fetch.WithConcurrency(4),
		fetch.WithStallTimeout(500*time.Millisecond))
	openStore := func() (*cache.Store, string) {
		root := t.TempDir()
		s, err := cache.Open(root, cache.Options{Capacity: 1 << 34})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, root
	}
	store, root := openStore()
	stores := []*cache.Store{store}
	roots := []string{root}
	reportedStale := map[string]bool{} // ETags of files a fetch said had changed
	unreported := map[string]bool{}    // ETags of files rewritten during a fetch that did not say so
	strandedIngests := 0
	outcomes := map[string]int{}
	// Round 0 gets every kind of fault at least once.
	faults.Force(s3test.Fault5xx, s3test.FaultSlowDown, s3test.FaultReset, s3test.FaultTruncate, s3test.FaultStall,
		s3test.FaultLongLength, s3test.FaultShortLength)
	const rounds = 14
	for round := range rounds {
		replaced.Lock()
		arm := round%4 == 1 && !replaced.armed
		replaced.armed = replaced.armed || arm
		replaced.Unlock()
		if arm {
			// Mostly a multi-part file: a changed object is then found by a
			// later part's If-Match, not only finished with old bytes.
			p := paths[rng.IntN(len(paths))]
			if rng.IntN(3) > 0 {
				p = []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[rng.IntN(2)]
			}
			if sizes[p] == 0 {
				p = "config.json"
			}
			faults.ReplaceNext(func(_, key string) bool { return key == "storm/"+p }, replace)
		}
		m, err := f.List(context.Background(), ref, nil)
		if err != nil {
			t.Fatalf("round %d: list: %v", round, err)
		}
		listed, etags := src.snapshot()
		for _, fl := range m.Files {
			if fl.ETag != etags[fl.Path] || fl.Size != int64(len(listed[fl.Path])) {
				t.Fatalf("round %d: listed %+v, the server holds ETag %s, %d bytes", round, fl, etags[fl.Path], len(listed[fl.Path]))
			}
		}
		replaced.Lock()
		replaced.key = ""
		replaced.Unlock()
		injected0, gets0, unplanned0, history0 := faults.Total(), faults.Gets(), faults.Unplanned(), len(faults.History(0))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		roundStart := time.Now()
		full, st, err := f.Fetch(ctx, ref, nil, m, store, nil)
		hung := ctx.Err() != nil
		cancel()
		took := time.Since(roundStart)
		e.proxy.WaitIdle(t, 10*time.Second) // a stalled answer ends when its client hangs up
		injected, gets, unplanned := faults.Total()-injected0, faults.Gets()-gets0, faults.Unplanned()-unplanned0
		t.Logf("round %d: %s in %s (+%s to idle), %d GETs, %d faults (+%d unplanned), %d retries: %v", round, outcome(err),
			took.Round(time.Millisecond), (time.Since(roundStart) - took).Round(time.Millisecond), gets, injected,
			unplanned, st.Retries, err)
		outcomes[outcome(err)]++
		// Every GET past one per part answers an injected fault, or one the
		// client gave up on (its stall timeout on a slow answer, when this
		// machine is busy): no request is repeated without a reason, and
		// none loops.
		if gets > totalParts+injected+unplanned {
			t.Errorf("round %d: %d GETs for %d parts, %d faults and %d unplanned failures:\n%s", round, gets,
				totalParts, injected, unplanned, strings.Join(faults.History(history0), "\n"))
		}
		if hung {
			t.Fatalf("round %d: fetch hung: %v", round, err)
		}
		replaced.Lock()
		changedKey, staleETag := replaced.key, replaced.oldETag
		replaced.Unlock()
		var fe *fetch.Error
		if changedKey != "" && !(errors.As(err, &fe) && errors.Is(err, fetch.ErrChanged) && fe.Key == changedKey) {
			// Rewritten, but the fetch ended (done, or another failure
			// first) before it asked for a part of the new version.
			unreported[staleETag] = true
		}
		switch {
		case err == nil:
			// Exactly the listed bytes, even when a file was rewritten during
			// the download (its old version, all of it).
			checkTree(t, store, full, listed)
			// Nothing is left to resume, except the ingest of a version
			// that was rewritten while a failed fetch had it open without
			// finding out: no fetch can tell it from one to resume, so it
			// stays until it ages out (cache.Store.DropStaleIngests; logged
			// here).
			for _, k := range ingests(t, root) {
				if !unreported[k.ETag] {
					t.Fatalf("round %d: ingest of %s (ETag %s) left after a complete fetch", round, k.Origin, k.ETag)
				}
				t.Logf("round %d: ingest of %s kept: it was rewritten unnoticed during a failed fetch", round, k.Origin)
				strandedIngests++
			}
			store, root = openStore()
			stores, roots = append(stores, store), append(roots, root)
			continue
		case !errors.As(err, &fe):
			t.Fatalf("round %d: not a *fetch.Error: %v", round, err)
		case errors.Is(err, fetch.ErrUnreachable):
			if !strings.Contains(err.Error(), fmt.Sprintf("after %d attempts", fetch.DefaultMaxAttempts)) ||
				!strings.Contains(err.Error(), e.proxy.URL()) {
				t.Fatalf("round %d: gave up without saying where or after how many attempts: %v", round, err)
			}
		case errors.Is(err, fetch.ErrChanged):
			if changedKey == "" || fe.Key != changedKey || !strings.Contains(err.Error(), "list the model again") {
				t.Fatalf("round %d: %v; replaced %q", round, err, changedKey)
			}
			reportedStale[staleETag] = true
		default:
			t.Fatalf("round %d: unclassified failure: %v", round, err)
		}
		// A failed fetch leaves no model tree, and no ingest it knows cannot
		// be resumed: one-leaf ingests are never kept, and a changed file's
		// bytes belong to a version that is gone.
		if !dirEmpty(t, filepath.Join(root, "models")) {
			t.Fatalf("round %d: a failed fetch left files under models/", round)
		}
		for _, k := range ingests(t, root) {
			if reportedStale[k.ETag] {
				t.Fatalf("round %d: the ingest of %s (ETag %s) was kept although the fetch found it changed", round, k.Origin, k.ETag)
			}
		}
	}
	if err := faults.ReplaceErr(); err != nil {
		t.Fatal(err)
	}

	// Re-hash everything: no blob is corrupt, and each is the digest of a
	// version really uploaded (a mix of two versions would hash cleanly to
	// a name of its own), which the ETag index maps to its own content.
	known := map[model.Digest]bool{}
	for _, d := range src.versions {
		known[d] = true
	}
	var blobs int
	for i, s := range stores {
		rep, err := s.Verify(context.Background())
		if err != nil || len(rep.Corrupt) > 0 {
			t.Fatalf("store %d: verify: %+v %v", i, rep.Corrupt, err)
		}
		blobs += rep.Blobs
		for etag, d := range src.versions {
			if got, ok := s.LookupETag(ref.Scope(), etag, src.sizes[etag]); ok && got != d {
				t.Errorf("store %d: ETag %s maps to %s, its content is %s", i, etag, got, d)
			}
		}
	}
	for i, r := range roots {
		ents, _ := os.ReadDir(filepath.Join(r, "blobs", model.DigestAlgorithm))
		for _, ent := range ents {
			if d := model.Digest(model.DigestAlgorithm + ":" + ent.Name()); !known[d] {
				t.Errorf("store %d holds blob %s, the digest of no uploaded version", i, d)
			}
		}
	}
	injected := faults.Injected()
	for k := s3test.Fault5xx; k < s3test.NumFaults; k++ {
		if injected[k] == 0 {
			t.Errorf("no %s fault was injected", k)
		}
	}
	if outcomes["ok"] == 0 {
		t.Error("no fetch completed")
	}
	t.Logf("%d rounds in %s: %v; %d object GETs, faults %v, %d unplanned failures; %d blobs re-hashed in %d stores; %d stranded ingests",
		rounds, time.Since(start).Round(time.Millisecond), outcomes, faults.Gets(), injected, faults.Unplanned(),
		blobs, len(stores), strandedIngests)
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, fetch.ErrUnreachable):
		return "unreachable"
	case errors.Is(err, fetch.ErrChanged):
		return "changed"
	}
	return "other"
}

// ingests lists the keys of the ingests under root; a one-leaf ingest
// (never kept, see cache.OpenIngest) fails the test.
func ingests(t *testing.T, root string) []cache.IngestKey {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(root, "ingest"))
	var keys []cache.IngestKey
	for _, ent := range ents {
		if !ent.IsDir() {
			t.Fatalf("one-leaf ingest %s left behind", ent.Name())
		}
		b, err := os.ReadFile(filepath.Join(root, "ingest", ent.Name(), "meta"))
		if err != nil {
			t.Fatal(err)
		}
		var k cache.IngestKey
		if err := json.Unmarshal(b, &k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}
