package fetch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/model"
)

// Store is where Fetch writes: *cache.Store and *cache.Reservation satisfy
// it. Lifecycle of what it returns: an Ingest is written (WriteAt, MarkLeaf)
// by any number of workers, then exactly one of Commit or Close is called —
// Close on failure, so a later Fetch resumes from the leaves it holds.
type Store interface {
	// LookupETag returns the digest of held content with this ETag and
	// size, listed before in scope (model.Ref.Scope).
	LookupETag(scope, etag string, size int64) (model.Digest, bool)
	// OpenIngest creates or resumes the ingest for key; ErrLocked if open.
	OpenIngest(key cache.IngestKey) (*cache.Ingest, error)
}

// Stats says where a model's bytes came from in one Fetch.
type Stats struct {
	BytesFetched int64 // downloaded by this call
	BytesResumed int64 // already held by ingests an earlier run left
	BytesDeduped int64 // in files the store already held (same ETag and size)
	FilesFetched int   // committed by this call (resumed and empty files too)
	FilesDeduped int   // not downloaded: held already, or a duplicate within the model
	Retries      int64 // requests retried after a transient failure
}

// Progress receives bytes of a model as they become held: fetched is true
// for bytes just written from S3, false for resumed or deduplicated ones,
// so a caller can report a download rate that means network speed.
type Progress func(n int64, fetched bool)

// Fetch downloads every file of m (from List) into store and returns m with
// every Digest filled. Files the store holds are not downloaded; partly
// downloaded ones resume. progress, if not nil, is called (from many
// goroutines) with each number of bytes that became available: held and
// resumed bytes at the start, then bytes as they are written, so its sum
// reaches m.Size() on success.
//
// On the first failure the other downloads stop, open ingests are closed
// (kept for a resume) and that error is returned; if ctx ends, ctx.Err().
// Stats are valid in every case. creds, when not nil, are a volume's keys,
// used instead of the source's own.
func (f *Fetcher) Fetch(ctx context.Context, ref model.Ref, creds *model.Credentials, m *model.Manifest, store Store, progress Progress) (*model.Manifest, Stats, error) {
	if m == nil {
		return nil, Stats{}, errors.New("fetch: nil manifest")
	}
	if want := ref.Location().String(); m.Ref != want {
		return nil, Stats{}, fmt.Errorf("fetch: manifest is for %s, not %s", m.Ref, want)
	}
	var o origin
	switch ref.Scheme {
	case model.SchemeHF:
		hub, err := f.hubOrigin(ref, creds, m)
		if err != nil {
			return nil, Stats{}, err
		}
		o = hub
	case model.SchemeOCI:
		reg, err := f.ociOrigin(ref, creds, m)
		if err != nil {
			return nil, Stats{}, err
		}
		o = reg
	case model.SchemeAzure:
		blobs, err := f.azureOrigin(ref, creds)
		if err != nil {
			return nil, Stats{}, err
		}
		o = blobs
	case model.SchemeGCS:
		g, err := f.gcsOrigin(ctx, ref, creds)
		if err != nil {
			return nil, Stats{}, err
		}
		o = g
	default:
		t, err := f.target(ctx, ref, creds)
		if err != nil {
			return nil, Stats{}, err
		}
		o = s3Origin{t: t, bucket: ref.Bucket, prefix: ref.Prefix}
	}
	if progress == nil {
		progress = func(int64, bool) {}
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &model.Manifest{Ref: m.Ref, SourceRevision: m.SourceRevision, Files: slices.Clone(m.Files)}
	r := &run{f: f, o: o, ctx: ctx, cancel: cancel, scope: ref.Scope(),
		store: store, out: out, progress: progress}
	f.gets.enter()
	defer f.gets.leave()
	r.work(f.concurrency)
	st := r.stats()
	switch {
	case r.err != nil:
		return nil, st, r.err
	case parent.Err() != nil:
		return nil, st, parent.Err()
	case !out.Complete():
		return nil, st, fmt.Errorf("fetch: internal error: %s finished without every digest", m.Ref)
	}
	return out, st, nil
}

// run is the state of one Fetch.
type run struct {
	f        *Fetcher
	o        origin
	ctx      context.Context
	cancel   context.CancelFunc
	scope    string // model.Ref.Scope: where an ETag means something
	store    Store
	out      *model.Manifest
	progress Progress

	fetched, resumed, deduped, retries atomic.Int64
	filesFetched, filesDeduped         atomic.Int64

	commits chan *file // files whose every part is written (see committers)

	mu   sync.Mutex
	err  error              // the first failure
	open map[*file]struct{} // ingests not yet committed
}

// file is one file being downloaded.
type file struct {
	idx  int // in out.Files
	key  string
	meta model.File
	ing  *cache.Ingest
	// oneLeaf: the ingest keeps no journal (no leaf sums needed) and is
	// committed in batches (see committers).
	oneLeaf bool
	left    atomic.Int32 // parts still to finish
	// gone: the object changed or disappeared since it was listed. Its
	// ingest holds bytes of a version no later run can resume (a new
	// listing gives a new ETag, so a new ingest), and is removed.
	gone atomic.Bool
}

// part is a run of consecutive pending leaves fetched with one ranged GET.
type part struct {
	file     *file
	leaf     int // first leaf
	off, end int64
}

func (r *run) stats() Stats {
	return Stats{BytesFetched: r.fetched.Load(), BytesResumed: r.resumed.Load(), BytesDeduped: r.deduped.Load(),
		FilesFetched: int(r.filesFetched.Load()), FilesDeduped: int(r.filesDeduped.Load()), Retries: r.retries.Load()}
}

// fail records the first error and stops the run. Errors that are only the
// echo of that stop (context.Canceled in other workers) are dropped.
func (r *run) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || r.ctx.Err() != nil {
		return
	}
	r.err = err
	r.cancel()
}

// work feeds the parts of every file to n workers. Files are opened a few
// ahead of the feed (see feedAll), so at most about n ingests (and 2n
// descriptors) are open whatever the number of files. Largest files go
// first: the tail of the download is then small files, not one big file on
// one connection. Parts of up to filesAtOnce files are interleaved (see feed).
func (r *run) work(n int) {
	parts := make(chan *part)
	fd := &feed{ctx: r.ctx, out: parts}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for p := range parts {
				if r.ctx.Err() != nil {
					continue
				}
				// The GET slot is taken with the part in hand, so a model
				// whose feed is still opening files holds none.
				buf, ok := r.f.gets.take(r.ctx)
				if !ok {
					continue
				}
				last := r.fetchPart(p, buf)
				r.f.gets.give(buf)
				if last {
					r.commits <- p.file
				}
			}
		})
	}
	// Commits (fsync, verify, rename, directory fsync: milliseconds each)
	// run beside the downloads instead of in the worker that wrote a file's
	// last part; with many small files that worker would otherwise spend a
	// good part of its time waiting for the disk instead of the network.
	// Room for a batch per committer (see maxBatch): a worker that finished
	// a small file goes back to the network instead of waiting for the disk.
	r.commits = make(chan *file, max(n, maxBatch))
	var cwg sync.WaitGroup
	for range committers {
		cwg.Go(func() {
			var batch []*file
			for fl := range r.commits {
				if !fl.oneLeaf {
					r.commit(fl)
					continue
				}
				batch = append(batch[:0], fl)
			more:
				for len(batch) < maxBatch {
					select {
					case next, ok := <-r.commits:
						if !ok {
							break more
						}
						if !next.oneLeaf {
							r.commit(next)
							continue
						}
						batch = append(batch, next)
					default:
						break more
					}
				}
				r.commitBatch(batch)
			}
		})
	}
	r.open = map[*file]struct{}{}
	order := make([]int, len(r.out.Files))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(r.out.Files[b].Size, r.out.Files[a].Size) })
	// The same content twice in one model (same ETag and size) is fetched
	// once; the copies take its digest at the end.
	first := map[cache.IngestKey]int{}
	dups := map[int]int{}
	var todo []int
	for _, i := range order {
		fm := r.out.Files[i]
		if fm.ETag != "" {
			k := cache.IngestKey{ETag: fm.ETag, Size: fm.Size}
			if j, ok := first[k]; ok {
				dups[i] = j
				continue
			}
			first[k] = i
		}
		todo = append(todo, i)
	}
	locked := r.feedAll(todo, fd)
	// Held by another download in this agent (another model with the same
	// file): wait for it, then it is either held (dedup) or ours to resume.
	for _, i := range locked {
		for delay := 50 * time.Millisecond; r.ctx.Err() == nil; delay = min(2*delay, time.Second) {
			if p := r.prepare(i); !p.locked {
				if len(p.parts) > 0 {
					fd.add(p.parts)
				}
				break
			}
			select {
			case <-time.After(delay):
			case <-r.ctx.Done():
			}
		}
		fd.drain()
	}
	close(parts)
	wg.Wait()
	close(r.commits)
	cwg.Wait()
	// Ingests are kept for a resume, except when the disk is full (their
	// bytes are what other models need, and a resume would fail the same
	// way) and those of objects that are gone.
	full := errors.Is(r.err, cache.ErrNoSpace)
	for fl := range r.open {
		release := fl.ing.Close
		if full || fl.gone.Load() {
			release = fl.ing.Abort
		}
		if err := release(); err != nil {
			r.f.log.Warn("close ingest", "key", fl.key, "err", err)
		}
	}
	if r.err != nil || r.ctx.Err() != nil {
		return
	}
	for i, j := range dups {
		r.out.Files[i].Digest = r.out.Files[j].Digest
		r.filesDeduped.Add(1)
		r.deduped.Add(r.out.Files[i].Size)
		r.progress(r.out.Files[i].Size, false)
	}
}

// plan groups consecutive pending leaves into parts of at most partSize.
func (r *run) plan(fl *file, pending []int) []*part {
	per := int(r.f.partSize / model.LeafSize)
	var ps []*part
	for i := 0; i < len(pending); {
		j := i + 1
		for j < len(pending) && j-i < per && pending[j] == pending[j-1]+1 {
			j++
		}
		off, _ := model.LeafRange(fl.meta.Size, pending[i])
		lastOff, lastN := model.LeafRange(fl.meta.Size, pending[j-1])
		ps = append(ps, &part{file: fl, leaf: pending[i], off: off, end: lastOff + lastN})
		i = j
	}
	return ps
}

// commit seals a fully written file into the store. After the run was
// stopped it is left to Close instead: a commit fsyncs the whole file, and
// a stopping agent should not wait for that; the next run commits at once.
func (r *run) commit(fl *file) {
	if r.ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	delete(r.open, fl)
	r.mu.Unlock()
	d, err := fl.ing.Commit(fl.meta.Digest)
	r.committed(fl, d, err)
}

// commitBatch commits one-leaf files together (cache.Store.CommitBatch).
// Like commit, it leaves them to Close once the run was stopped.
func (r *run) commitBatch(fls []*file) {
	if r.ctx.Err() != nil {
		return
	}
	cs, ok := r.store.(batchCommitter)
	if !ok || len(fls) == 1 {
		for _, fl := range fls {
			r.commit(fl)
		}
		return
	}
	ings := make([]*cache.Ingest, len(fls))
	want := make([]model.Digest, len(fls))
	r.mu.Lock()
	for i, fl := range fls {
		delete(r.open, fl)
		ings[i], want[i] = fl.ing, fl.meta.Digest
	}
	r.mu.Unlock()
	ds, errs := cs.CommitBatch(ings, want)
	for i, fl := range fls {
		r.committed(fl, ds[i], errs[i])
	}
}

// batchCommitter is a Store that commits one-leaf ingests in batches
// (*cache.Store and *cache.Reservation).
type batchCommitter interface {
	CommitBatch(ws []*cache.Ingest, expected []model.Digest) ([]model.Digest, []error)
}

// committed records the outcome of a file's commit.
func (r *run) committed(fl *file, d model.Digest, err error) {
	if errors.Is(err, cache.ErrCorrupt) && (fl.meta.Digest != "" || fl.meta.Composite != nil) {
		// The bytes served do not have the SHA-256 they were expected to:
		// the one the server published (x-amz-checksum-sha256), or, for a
		// repair, the one held before. The server lies or the object changed.
		r.fail(r.o.errorf(ErrChanged, fl.key,
			"the bytes served do not match the SHA-256 expected for the file (published by the source, or held before); nothing was stored", err))
		return
	}
	if err != nil {
		r.fail(fmt.Errorf("fetch %s: %w", r.o.where(fl.key), err))
		return
	}
	r.out.Files[fl.idx].Digest = d
	r.filesFetched.Add(1)
}
