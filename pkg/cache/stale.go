package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Partial downloads are kept under ingest/ for a resume, and count against
// the capacity (see partials.go). One that is never
// resumed (a model nobody asks for any more, an object rewritten on the
// server while a fetch that then failed for another reason had it open: the
// next listing gives a new ETag and so another ingest) would hold its
// preallocated blocks for good. DropStaleIngests ages them out.

// Partials is what ingest/ holds: downloads in progress and partial ones
// kept for a resume.
type Partials struct {
	Count int   `json:"count"`
	Bytes int64 `json:"bytes"` // allocated on disk (ingests are preallocated)
}

// Partials walks ingest/. It takes no store lock: the numbers are a snapshot.
func (s *Store) Partials() Partials {
	var p Partials
	entries, _ := os.ReadDir(filepath.Join(s.root, dirIngest))
	for _, e := range entries {
		_, bytes := ingestUsage(filepath.Join(s.root, dirIngest, e.Name()))
		p.Count++
		p.Bytes += bytes
	}
	return p
}

// DropStaleIngests removes every ingest that no download has open and
// whose files were last written more than maxAge ago, and returns what it
// removed. One in use is skipped: it holds the ingest's lock meanwhile, so
// a download cannot open it half removed (its OpenIngest sees ErrLocked and
// waits like for any other holder).
func (s *Store) DropStaleIngests(maxAge time.Duration) (Partials, error) {
	var dropped Partials
	dir := filepath.Join(s.root, dirIngest)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return dropped, fmt.Errorf("cache: read ingests: %w", err)
	}
	cutoff := s.opts.Now().Add(-maxAge)
	var errs []error
	for _, e := range entries {
		id := strings.TrimSuffix(e.Name(), oneLeafSuffix)
		if s.lockIngest(id) != nil {
			continue // a download has it open
		}
		path := filepath.Join(dir, e.Name())
		last, bytes := ingestUsage(path)
		if !last.IsZero() && last.Before(cutoff) {
			origin := ingestOrigin(path)
			if err := os.RemoveAll(path); err != nil {
				errs = append(errs, fmt.Errorf("cache: drop stale ingest: %w", err))
			} else {
				s.mu.Lock()
				s.forgetLocked(id)
				s.mu.Unlock()
				dropped.Count++
				dropped.Bytes += bytes
				s.log.Info("dropped a partial download nobody resumed", "origin", origin,
					"lastWrite", last, "bytes", bytes)
			}
		}
		s.unlockIngest(id)
	}
	return dropped, errors.Join(errs...)
}

// ingestUsage is the newest modification time of an ingest's files (every
// written leaf touches data, every journalled one leaves) and the bytes they
// hold on disk.
func ingestUsage(path string) (last time.Time, bytes int64) {
	files := []string{path} // an empty directory ages by its own time
	if sub, err := os.ReadDir(path); err == nil {
		for _, f := range sub {
			files = append(files, filepath.Join(path, f.Name()))
		}
	}
	for _, f := range files {
		fi, err := os.Lstat(f)
		if err != nil {
			continue
		}
		if fi.ModTime().After(last) {
			last = fi.ModTime()
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			bytes += st.Blocks * 512
		}
	}
	return last, bytes
}

// ingestOrigin names what an ingest was downloading, for the log.
func ingestOrigin(path string) string {
	var k IngestKey
	if b, err := os.ReadFile(filepath.Join(path, ingestMeta)); err == nil && json.Unmarshal(b, &k) == nil {
		return k.Origin
	}
	return filepath.Base(path)
}
