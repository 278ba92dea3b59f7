package fetch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/modelcache/modelcache/pkg/cache"
)

// openers is how many files are made ready (dedup lookup, OpenIngest with
// its resume check, plan) at once, ahead of the feed. Opening an ingest is
// a dozen file system calls and its commit point is far away; done by the
// feed itself, one file at a time, it starved the workers of a model of
// 2,000 small files (30% of the CPU profile was OpenIngest in that one
// goroutine).
const openers = 4

// committers is how many commits run at once. A commit mostly waits for
// the disk (fsyncs), and the file system joins concurrent fsyncs into one
// journal commit. Two are enough: the one-leaf files queued while a commit
// runs go into the next one as a batch, whose fsyncs run together. Eight
// mostly took the files one at a time and paid for the wakeups: on the
// 2,000-file set they made three times the futex calls and used 7-19% more
// CPU than two (fetch-profile A/B runs and docs/benchmarks/2026-12-03T1430Z.md).
const committers = 2

// maxBatch bounds how many one-leaf files one committer commits together
// (cache.Store.CommitBatch: their fsyncs at once, one blobs/ fsync for all). A
// committer takes whatever is queued when it is free, so batches grow only
// when commits fall behind the downloads, as with many small files on a
// disk whose fsyncs take milliseconds; 64 one-leaf files are at most 512 MiB
// of data to sync at once.
const maxBatch = 64

// prepared is a file made ready by prepare.
type prepared struct {
	i      int
	parts  []*part // nil: nothing to fetch (held, empty, resumed or failed)
	locked bool    // another download holds the file's ingest: retry later
}

// feedAll prepares the files todo (in that order, openers at a time) and
// feeds their parts to the workers as they become ready. It returns the
// files whose ingest another download held.
func (r *run) feedAll(todo []int, fd *feed) (locked []int) {
	idx := make(chan int)
	ready := make(chan prepared, openers)
	go func() {
		defer close(idx)
		for _, i := range todo {
			select {
			case idx <- i:
			case <-r.ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range openers {
		wg.Go(func() {
			for i := range idx {
				ready <- r.prepare(i)
			}
		})
	}
	go func() { wg.Wait(); close(ready) }()
	// Always read ready to its end, so no opener is left blocked; after a
	// failure fd.add sends nothing and the prepared files are closed with
	// the rest of r.open.
	for p := range ready {
		if p.locked {
			locked = append(locked, p.i)
		} else if len(p.parts) > 0 {
			fd.add(p.parts)
		}
	}
	fd.drain()
	return locked
}

// prepare handles file i: done at once if the store holds it, empty or
// fully resumed; otherwise it returns the parts to fetch. Safe to call from
// several goroutines.
func (r *run) prepare(i int) prepared {
	fm := r.out.Files[i]
	key := r.o.key(fm.Path)
	if d, ok := r.store.LookupETag(r.scope, fm.ETag, fm.Size); ok && (fm.Digest == "" || fm.Digest == d) {
		r.out.Files[i].Digest = d
		r.filesDeduped.Add(1)
		r.deduped.Add(fm.Size)
		r.progress(fm.Size, false)
		return prepared{i: i}
	}
	ing, err := r.store.OpenIngest(cache.IngestKey{Scope: r.scope, Origin: r.o.ingestOrigin(key), ETag: fm.ETag, Size: fm.Size})
	if errors.Is(err, cache.ErrLocked) {
		return prepared{i: i, locked: true}
	}
	if err != nil {
		r.fail(fmt.Errorf("fetch %s: %w", r.o.where(key), err))
		return prepared{i: i}
	}
	if fm.Composite != nil {
		if err := ing.ExpectComposite(fm.Composite); err != nil {
			ing.Close()
			r.fail(fmt.Errorf("fetch %s: %w", r.o.where(key), err))
			return prepared{i: i}
		}
	}
	fl := &file{idx: i, key: key, meta: fm, ing: ing, oneLeaf: ing.OneLeaf()}
	r.mu.Lock()
	r.open[fl] = struct{}{}
	r.mu.Unlock()
	if held := ing.HeldBytes(); held > 0 {
		r.resumed.Add(held)
		r.progress(held, false)
	}
	ps := r.plan(fl, ing.Pending())
	if len(ps) == 0 { // empty, or every leaf resumed
		r.commit(fl)
		return prepared{i: i}
	}
	fl.left.Store(int32(len(ps)))
	return prepared{i: i, parts: ps}
}

// filesAtOnce is how many files' parts the feed interleaves. Parts of one
// file written by all workers at once queue on that file's inode lock
// (buffered writes to one file are serialized by the kernel); spread over a
// few files they mostly do not, as with rclone's 4 transfers × N streams.
const filesAtOnce = 4

// feed sends parts to the workers round-robin over up to filesAtOnce files.
type feed struct {
	ctx   context.Context
	out   chan<- *part
	lists [][]*part // per file, parts not yet sent
	next  int
}

// add queues a file's parts, then sends until fewer than filesAtOnce files
// have parts waiting, so the next file joins the rotation.
func (f *feed) add(ps []*part) {
	f.lists = append(f.lists, ps)
	for len(f.lists) >= filesAtOnce && f.sendOne() {
	}
}

// drain sends every queued part.
func (f *feed) drain() {
	for len(f.lists) > 0 && f.sendOne() {
	}
}

// sendOne sends the next part in rotation; false once the run is stopped
// (the queue is then dropped: its files are closed, not committed).
func (f *feed) sendOne() bool {
	f.next %= len(f.lists)
	l := f.lists[f.next]
	select {
	case f.out <- l[0]:
	case <-f.ctx.Done():
		f.lists = nil
		return false
	}
	if len(l) == 1 {
		f.lists = slices.Delete(f.lists, f.next, f.next+1)
	} else {
		f.lists[f.next] = l[1:]
		f.next++
	}
	return true
}
