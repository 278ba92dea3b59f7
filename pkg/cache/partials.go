package cache

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Partial downloads kept for a resume count against the capacity like
// blobs: every ingest holds its file's whole size (it is preallocated), and
// a tenant whose downloads keep failing (a server that answers 500 half way)
// would otherwise fill the disk past --capacity with bytes nobody resumes.
// An ingest a download has open is not counted here: its reservation covers
// it. When room is needed, kept partial downloads are dropped, oldest first,
// after unpinned models (see makeRoomLocked).
type keptIngest struct {
	bytes int64
	since time.Time // last write
	path  string
}

// loadKept counts the partial downloads under ingest/ at Open.
func (s *Store) loadKept() {
	dir := filepath.Join(s.root, dirIngest)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		last, bytes := ingestUsage(path)
		s.kept[strings.TrimSuffix(e.Name(), oneLeafSuffix)] = keptIngest{bytes: bytes, since: last, path: path}
		s.keptBytes += bytes
	}
}

// keepLocked counts a partial download that was just closed; s.mu held.
func (s *Store) keepLocked(id, path string) {
	s.forgetLocked(id)
	last, bytes := ingestUsage(path)
	if bytes == 0 && last.IsZero() {
		return // nothing left on disk
	}
	s.kept[id] = keptIngest{bytes: bytes, since: last, path: path}
	s.keptBytes += bytes
}

// forgetLocked stops counting an ingest (opened, committed or removed).
func (s *Store) forgetLocked(id string) {
	if k, ok := s.kept[id]; ok {
		s.keptBytes -= k.bytes
		delete(s.kept, id)
	}
}

// dropKeptLocked removes kept partial downloads, oldest first, until the
// store is back at target or none is left; s.mu held. One a download has
// just opened is skipped (its lock is taken).
func (s *Store) dropKeptLocked(target int64) {
	ids := make([]string, 0, len(s.kept))
	for id := range s.kept {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return s.kept[ids[i]].since.Before(s.kept[ids[j]].since) })
	for _, id := range ids {
		if s.committedLocked() <= target {
			return
		}
		if s.lockIngest(id) != nil {
			continue
		}
		k := s.kept[id]
		if err := os.RemoveAll(k.path); err != nil {
			s.log.Warn("drop partial download for room", "path", k.path, "err", err)
		} else {
			s.log.Info("dropped a partial download to make room", "origin", ingestOrigin(k.path), "bytes", k.bytes)
			s.forgetLocked(id)
		}
		s.unlockIngest(id)
	}
}
