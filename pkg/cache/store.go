// Package cache is the node's content store: immutable blobs named by digest,
// resumable ingests, manifests, model trees of hard links made visible by one
// atomic rename, pins, capacity and LRU eviction. It knows nothing of S3,
// Kubernetes or gRPC; the agent is its only writer.
//
// Layout under the root:
//
//	blobs/<alg>/<hex>             immutable content, mode 0444
//	ingest/<id>/{data,meta,leaves} downloads in progress, resumable
//	ingest/<id>.one               a download of at most one leaf (see oneLeafSuffix)
//	manifests/<ref-id>/<rev>.json one per model revision
//	models/<ref-id>/<rev>/…       hard links to blobs; what gets bind-mounted
//	index.log                     (scope, etag, size) → digest, append-only
//	state.json                    refs, revisions, pins, last use (temp + fsync + rename)
//	pins.log                      pin changes since the last state save (append, see pins.go)
//	quarantine/                   blobs that failed verify
//	trash/                        trees being deleted
package cache

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modelcache/modelcache/pkg/model"
)

// Errors callers branch on. Wrapped errors keep these in their chain.
var (
	ErrNotFound = errors.New("cache: not found")
	ErrLocked   = errors.New("cache: unavailable: held by another writer")
	ErrNoSpace  = errors.New("cache: no space")
	ErrTooLarge = errors.New("cache: larger than the cache capacity")
	ErrCorrupt  = errors.New("cache: corrupt content")
	ErrPinned   = errors.New("cache: pinned")
)

const (
	dirBlobs      = "blobs"
	dirIngest     = "ingest"
	dirManifests  = "manifests"
	dirModels     = "models"
	dirQuarantine = "quarantine"
	dirTrash      = "trash"
	fileIndex     = "index.log"
	fileState     = "state.json"
	fileLock      = "lock"
)

// Options configure a Store.
type Options struct {
	// Capacity is the most bytes of blobs the store may hold (0: the free
	// space of the filesystem when the store opens).
	Capacity int64
	// HighWatermark and LowWatermark are fractions of Capacity: making room
	// for a download that would pass High evicts down to Low (defaults 0.9, 0.8).
	HighWatermark, LowWatermark float64
	Logger                      *slog.Logger
	// Yields names pin holders that give way to a reservation made with
	// EvictYielding (the prefetch controller's workload pins); nil: none.
	Yields func(holder string) bool
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Store is the content store. Its methods are safe for concurrent use.
type Store struct {
	root string
	opts Options
	log  *slog.Logger
	lock *os.File // flock: one agent per cache directory

	ingestMu sync.Mutex
	ingests  map[string]time.Time // ingest id → since

	index    *etagIndex
	blobSync *groupSync // fsyncs of blobs/<alg>, shared by concurrent commits

	// mu guards everything below. One lock for content and metadata alike:
	// the capacity invariant (blobs + kept partials + reservations) and the
	// rule that a blob goes only when no tree links it and no download
	// keeps it span both (docs/architecture.md, "Locks").
	mu         sync.Mutex
	state      *state
	dirty      bool     // state has unsaved last-use times or pins
	saveGen    uint64   // snapshots of state taken for saving
	pinLog     *os.File // pins.log, append-only (see pins.go)
	pinLogSize int64

	saveMu    sync.Mutex                 // serializes writes of state.json; taken after mu, never before
	savedGen  uint64                     // newest snapshot written
	manifests map[string]*model.Manifest // by manifestKey(refID, rev)
	used      int64                      // bytes of blobs on disk
	reserved  map[*Reservation]bool
	kept      map[string]keptIngest // partial downloads no download has open (see partials.go)
	keptBytes int64
	building  map[string]int // ref IDs whose tree is being built: not evictable
	evictions int64
	changed   chan struct{} // see Changed
}

// Open opens (creating if needed) the store at root and recovers from any
// crash: it removes half-built trees and trash, rebuilds the etag index, and
// drops state entries whose tree is gone. Ingests stay for resume.
func Open(root string, opts Options) (*Store, error) {
	if opts.HighWatermark == 0 {
		opts.HighWatermark = 0.9
	}
	if opts.LowWatermark == 0 {
		opts.LowWatermark = 0.8
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LowWatermark <= 0 || opts.HighWatermark > 1 || opts.LowWatermark > opts.HighWatermark {
		return nil, fmt.Errorf("cache: watermarks low %.2f high %.2f: want 0 < low <= high <= 1", opts.LowWatermark, opts.HighWatermark)
	}
	if opts.Capacity < 0 {
		return nil, fmt.Errorf("cache: negative capacity %d", opts.Capacity)
	}
	s := &Store{root: root, opts: opts, log: opts.Logger, ingests: map[string]time.Time{},
		manifests: map[string]*model.Manifest{}, reserved: map[*Reservation]bool{}, building: map[string]int{},
		kept:     map[string]keptIngest{},
		blobSync: newGroupSync(filepath.Join(root, dirBlobs, model.DigestAlgorithm)),
		changed:  make(chan struct{}, 1)}
	for _, d := range []string{dirBlobs, filepath.Join(dirBlobs, model.DigestAlgorithm), dirIngest, dirManifests, dirModels, dirQuarantine, dirTrash} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("cache: create %s: %w", d, err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(root, fileLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache: open lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%w: cache directory %s is in use by another agent", ErrLocked, root)
	}
	s.lock = lock
	if s.opts.Capacity == 0 {
		var st unix.Statfs_t
		if err := unix.Statfs(root, &st); err != nil {
			lock.Close()
			return nil, fmt.Errorf("cache: statfs %s: %w", root, err)
		}
		s.opts.Capacity = int64(st.Bavail) * st.Bsize
	}
	if err := s.upgrade(); err != nil {
		lock.Close()
		return nil, err
	}
	if err := s.recover(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// Close writes batched state (last use, pins) durably and releases the
// directory lock.
func (s *Store) Close() error {
	ferr := s.Flush()
	var perr error
	if s.pinLog != nil {
		perr = s.pinLog.Close()
	}
	return errors.Join(ferr, perr, s.lock.Close())
}

// Root is the cache directory.
func (s *Store) Root() string { return s.root }

func (s *Store) lockIngest(id string) error {
	s.ingestMu.Lock()
	defer s.ingestMu.Unlock()
	if since, ok := s.ingests[id]; ok {
		return fmt.Errorf("%w: ingest %s since %s", ErrLocked, id, since.Format(time.RFC3339))
	}
	s.ingests[id] = s.opts.Now()
	return nil
}

func (s *Store) unlockIngest(id string) {
	s.ingestMu.Lock()
	delete(s.ingests, id)
	s.ingestMu.Unlock()
}

func (s *Store) blobPath(d model.Digest) string {
	return filepath.Join(s.root, dirBlobs, d.Algorithm(), d.Hex())
}

// HasBlob reports whether content with digest d is held.
func (s *Store) HasBlob(d model.Digest) bool {
	if d.Validate() != nil {
		return false
	}
	_, err := os.Lstat(s.blobPath(d))
	return err == nil
}

// LookupETag returns the digest of held content with this ETag and size
// in scope (model.Ref.Scope), so the fetcher can skip a download. An empty
// ETag or scope never matches.
func (s *Store) LookupETag(scope, etag string, size int64) (model.Digest, bool) {
	if etag == "" || scope == "" {
		return "", false
	}
	d, ok := s.index.get(scope, etag, size)
	if !ok || !s.HasBlob(d) {
		return "", false
	}
	return d, true
}

// commitBlob moves a fully written, fsynced file into blobs/ under digest
// (renamed is false if the store held it already; see renameBlob).
// Holding s.mu across the existence check and the rename keeps garbage
// collection from deleting a blob a download has just found or written.
func (s *Store) commitBlob(src string, d model.Digest, size int64, res *Reservation) (renamed bool, err error) {
	if renamed, err = s.renameBlob(src, d, size, res); err != nil {
		return false, err
	}
	// After the rename the blob is committed; a failed directory sync is
	// logged, not rolled back (containerd's rule). Concurrent commits share
	// the directory's fsyncs (see groupSync).
	s.syncBlobDir(d)
	return renamed, nil
}

// syncBlobDir makes renames into d's blobs/ directory durable.
func (s *Store) syncBlobDir(d model.Digest) {
	sync := s.blobSync.Sync
	if d.Algorithm() != model.DigestAlgorithm {
		sync = func() error { return syncDir(filepath.Dir(s.blobPath(d))) }
	}
	if err := sync(); err != nil {
		s.log.Warn("fsync blobs dir", "err", err)
	}
}

// renameBlob moves a fully written, durable file into blobs/ under digest,
// without syncing the directory; renamed is false if the store held the
// digest already (src is then left where it is).
func (s *Store) renameBlob(src string, d model.Digest, size int64, res *Reservation) (renamed bool, err error) {
	dst := s.blobPath(d)
	if err := os.Chmod(src, 0o444); err != nil {
		return false, fmt.Errorf("cache: chmod blob: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if res != nil {
		res.committedLocked(d, size)
	}
	if _, err := os.Lstat(dst); err == nil {
		return false, nil // identical content already held: dedup, the ingest is dropped
	}
	if err := os.Rename(src, dst); err != nil {
		return false, fmt.Errorf("cache: commit blob %s: %w", d, err)
	}
	s.used += size
	return true, nil
}

func classifyNoSpace(err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// writeFileSync writes a file and fsyncs it.
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return classifyNoSpace(err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeFileAtomic replaces path with b so that a crash leaves the old or the
// new content, never a mix: temp file, fsync, rename, fsync dir.
func writeFileAtomic(path string, b []byte) error {
	tmp := fmt.Sprintf("%s.tmp-%d", path, os.Getpid())
	if err := writeFileSync(tmp, b); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
