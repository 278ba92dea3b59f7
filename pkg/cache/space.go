package cache

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/modelcache/modelcache/pkg/model"
)

// Reservation holds space for one download and keeps the blobs it commits
// or finds from garbage collection until the model's tree links them.
// Lifecycle: Store.Reserve → LookupETag / OpenIngest (it satisfies the
// fetcher's store) → Store.PutModel → Release.
type Reservation struct {
	s     *Store
	bytes int64 // still reserved; shrinks as blobs commit
	keep  map[model.Digest]bool
}

// ReserveOption tunes Reserve.
type ReserveOption func(*reserveConfig)

type reserveConfig struct{ evictYielding bool }

// EvictYielding lets a reservation evict revisions whose every pin is held
// by a holder Options.Yields names (a prefetch wish, not a pod that reads
// the model), least recently used first, after everything unpinned. It is
// for downloads a volume waits for: a pod about to start comes before a
// pre-warmed pool, so no namespace's prefetch annotations can take the
// cache from another's pods. Prefetch downloads reserve without it, so two
// namespaces' prefetches never evict each other's in turn.
func EvictYielding() ReserveOption { return func(c *reserveConfig) { c.evictYielding = true } }

// Reserve sets aside need bytes. If the store would pass its high watermark
// it first drops unreferenced blobs, then evicts unpinned revisions in LRU
// order, then partial downloads, then (with EvictYielding) revisions only
// prefetches pin, until it is back under the low watermark. A need larger
// than the capacity fails with ErrTooLarge, one that cannot be met with
// ErrNoSpace.
func (s *Store) Reserve(need int64, opts ...ReserveOption) (*Reservation, error) {
	var cfg reserveConfig
	for _, o := range opts {
		o(&cfg)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.opts.Capacity
	if need < 0 {
		return nil, fmt.Errorf("cache: reserve %d bytes: negative", need)
	}
	if need > c {
		return nil, fmt.Errorf("%w: needs %s, capacity is %s", ErrTooLarge, model.FormatBytes(need), model.FormatBytes(c))
	}
	if s.committedLocked()+need > int64(float64(c)*s.opts.HighWatermark) {
		s.makeRoomLocked(int64(float64(c)*s.opts.LowWatermark)-need, cfg.evictYielding)
	}
	if got := s.committedLocked(); got+need > c {
		return nil, fmt.Errorf("%w: needs %s, %s of %s in use by pinned models, downloads and partial downloads",
			ErrNoSpace, model.FormatBytes(need), model.FormatBytes(got), model.FormatBytes(c))
	}
	r := &Reservation{s: s, bytes: need, keep: map[model.Digest]bool{}}
	s.reserved[r] = true
	return r, nil
}

// committedLocked is blob bytes on disk, bytes promised to downloads and
// the bytes of partial downloads kept for a resume.
func (s *Store) committedLocked() int64 {
	n := s.used + s.keptBytes
	for r := range s.reserved {
		n += r.bytes
	}
	return n
}

// makeRoomLocked evicts until committedLocked() <= target or nothing is left
// to evict: unpinned revisions (LRU), then partial downloads (a resume saves
// bytes, but a whole model serves pods now), then, with yielding, revisions
// only prefetches pin (LRU). Trees and blobs are deleted inline: eviction is
// rare and the caller needs the space now.
func (s *Store) makeRoomLocked(target int64, yielding bool) {
	s.gcBlobsLocked()
	evicted := s.evictLRULocked(target, func(pins map[string]time.Time) bool { return len(pins) == 0 })
	if s.committedLocked() > target {
		s.dropKeptLocked(target)
	}
	if yielding && s.opts.Yields != nil && s.committedLocked() > target {
		evicted = s.evictLRULocked(target, func(pins map[string]time.Time) bool {
			for h := range pins {
				if !s.opts.Yields(h) {
					return false
				}
			}
			return true
		}) || evicted
	}
	if evicted {
		if err := s.saveLocked(); err != nil {
			s.log.Error("save state after eviction", "err", err)
		}
	}
}

// evictLRULocked evicts revisions that may go (evictable, given their pins)
// in LRU order until committedLocked() <= target; it reports whether it
// evicted any.
func (s *Store) evictLRULocked(target int64, evictable func(pins map[string]time.Time) bool) bool {
	type cand struct {
		id, rev string
		st      *revState
	}
	var cands []cand
	for id, rs := range s.state.Refs {
		if s.building[id] > 0 {
			continue
		}
		for rev, st := range rs.Revisions {
			if evictable(st.Pins) {
				cands = append(cands, cand{id, rev, st})
			}
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].st.LastUse.Before(cands[j].st.LastUse) })
	evicted := false
	for _, c := range cands {
		if s.committedLocked() <= target {
			break
		}
		ref := s.state.Refs[c.id].Ref
		if len(c.st.Pins) > 0 {
			s.log.Info("evicting a model only prefetches pin, for a volume", "ref", ref, "revision", c.rev, "holders", holders(c.st.Pins))
		} else {
			s.log.Info("evicting least recently used model", "ref", ref, "revision", c.rev, "lastUse", c.st.LastUse)
		}
		s.evictions++
		if err := os.RemoveAll(s.removeRevisionLocked(c.id, c.rev)); err != nil {
			s.log.Warn("delete evicted tree", "err", err)
		}
		s.gcBlobsLocked()
		evicted = true
	}
	return evicted
}

// LookupETag is Store.LookupETag that also keeps the blob it finds.
func (r *Reservation) LookupETag(scope, etag string, size int64) (model.Digest, bool) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	d, ok := r.s.LookupETag(scope, etag, size)
	if ok {
		r.keep[d] = true
	}
	return d, ok
}

// OpenIngest is Store.OpenIngest whose commit is kept and charged to r.
func (r *Reservation) OpenIngest(k IngestKey) (*Ingest, error) {
	w, err := r.s.OpenIngest(k)
	if err != nil {
		return nil, err
	}
	w.res = r
	return w, nil
}

// CommitBatch is Store.CommitBatch for ingests opened through r.
func (r *Reservation) CommitBatch(ws []*Ingest, expected []model.Digest) ([]model.Digest, []error) {
	return r.s.CommitBatch(ws, expected)
}

// Keep protects a held blob (found some other way) until Release.
func (r *Reservation) Keep(d model.Digest) {
	r.s.mu.Lock()
	r.keep[d] = true
	r.s.mu.Unlock()
}

// committed is called with s.mu held when a blob of this download lands.
func (r *Reservation) committedLocked(d model.Digest, size int64) {
	r.keep[d] = true
	r.bytes = max(0, r.bytes-size)
}

// Release returns what is left of the reservation. Blobs it kept and that no
// tree links become garbage for the next collection. Idempotent.
func (r *Reservation) Release() {
	r.s.mu.Lock()
	delete(r.s.reserved, r)
	r.s.mu.Unlock()
}

// gcBlobs deletes blobs that no tree links and no download keeps.
func (s *Store) gcBlobs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gcBlobsLocked()
}

func (s *Store) gcBlobsLocked() {
	kept := map[model.Digest]bool{}
	for r := range s.reserved {
		for d := range r.keep {
			kept[d] = true
		}
	}
	algDir := filepath.Join(s.root, dirBlobs, model.DigestAlgorithm)
	entries, err := os.ReadDir(algDir)
	if err != nil {
		s.log.Warn("gc: read blobs", "err", err)
		return
	}
	for _, e := range entries {
		d := model.Digest(model.DigestAlgorithm + ":" + e.Name())
		if kept[d] {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || st.Nlink > 1 {
			continue
		}
		if err := os.Remove(filepath.Join(algDir, e.Name())); err != nil {
			s.log.Warn("gc: remove blob", "digest", d, "err", err)
			continue
		}
		s.used -= fi.Size()
	}
}
